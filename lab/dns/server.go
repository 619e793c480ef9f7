package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/netutil"
)

// answerTimeout bounds the time an Answerer may take for one query.
const answerTimeout = 4 * time.Second

// maxTCPConns bounds the TCP connections ListenAndServe serves at once.
const maxTCPConns = 256

// Server is the front of every lab DNS server: it checks queries, answers
// the lab's CHAOS queries itself, hands class IN queries to an Answerer
// and serves the answers over UDP and TCP.
type Server struct {
	// Admit, when set, says whether a client may ask the lab's CHAOS
	// queries (flush.labctl., stats.labctl.); those it turns away get
	// REFUSED. nil admits everyone. Set it before serving.
	Admit func(netip.Addr) bool

	a     Answerer
	st    *Counters
	flush func() int
	log   *slog.Logger
}

// NewServer returns the front of a. flush, which may be nil, empties a
// cache and returns how many entries it held (FlushName).
func NewServer(a Answerer, st *Counters, flush func() int, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{a: a, st: st, flush: flush, log: log}
}

// Handle answers req from client, nil when no reply must be sent (req is
// a response). It does no I/O of its own: the Answerer does what it does.
func (s *Server) Handle(ctx context.Context, req *mdns.Msg, client netip.Addr) *mdns.Msg {
	if req == nil || req.Response {
		return nil
	}
	s.st.Add("queries", 1)
	resp := s.finish(req, s.handle(ctx, req, client))
	s.st.Add("rcode_"+RcodeName(resp.Rcode), 1)
	return resp
}

func (s *Server) handle(ctx context.Context, req *mdns.Msg, client netip.Addr) *mdns.Msg {
	reply := func(rcode int) *mdns.Msg { return new(mdns.Msg).SetRcode(req, rcode) }
	if req.Opcode != mdns.OpcodeQuery {
		return reply(mdns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return reply(mdns.RcodeFormatError)
	}
	opts := 0
	for _, rr := range req.Extra {
		if rr.Header().Rrtype == mdns.TypeOPT {
			opts++
		}
	}
	if opts > 1 {
		return reply(mdns.RcodeFormatError) // RFC 6891 6.1.1
	}
	if opt := req.IsEdns0(); opt != nil && opt.Version() > 0 {
		return reply(mdns.RcodeBadVers)
	}
	q := req.Question[0]
	switch q.Qclass {
	case mdns.ClassINET:
	case mdns.ClassCHAOS:
		if s.Admit != nil && !s.Admit(client) {
			s.st.Add("refused", 1)
			return reply(mdns.RcodeRefused)
		}
		return s.chaos(req, q)
	default:
		return reply(mdns.RcodeRefused)
	}
	switch t := q.Qtype; {
	case t == mdns.TypeAXFR || t == mdns.TypeIXFR:
		return reply(mdns.RcodeRefused) // no zone transfers
	case MetaType(t):
		return reply(mdns.RcodeFormatError) // meta types are not questions
	}
	ctx, cancel := context.WithTimeout(ctx, answerTimeout)
	defer cancel()
	resp := s.answer(ctx, req, client)
	if resp == nil {
		return reply(mdns.RcodeServerFailure)
	}
	return resp
}

// answer calls the Answerer, turning a panic into a nil answer.
func (s *Server) answer(ctx context.Context, req *mdns.Msg, client netip.Addr) (resp *mdns.Msg) {
	defer func() {
		if p := recover(); p != nil {
			s.st.Add("panics", 1)
			s.log.Error("dns: the answerer panicked", "panic", fmt.Sprint(p), "question", req.Question[0].String(),
				"client", client.String(), "stack", string(debug.Stack()))
			resp = nil
		}
	}()
	return s.a.Answer(ctx, req, client)
}

// chaos answers the lab's CHAOS TXT queries.
func (s *Server) chaos(req *mdns.Msg, q mdns.Question) *mdns.Msg {
	m := new(mdns.Msg).SetReply(req)
	if q.Qtype != mdns.TypeTXT {
		m.Rcode = mdns.RcodeRefused
		return m
	}
	var strs []string
	switch Fqdn(q.Name) {
	case StatsName:
		strs = s.st.Strings()
	case FlushName:
		if s.flush == nil {
			m.Rcode = mdns.RcodeRefused
			return m
		}
		strs = []string{"flushed=" + strconv.Itoa(s.flush())}
	default:
		m.Rcode = mdns.RcodeRefused
		return m
	}
	m.Authoritative = true
	m.Answer = chaosTXT(q.Name, strs)
	return m
}

// chaosTXT holds strs in TXT records of class CHAOS: strings longer than
// a character-string are split, and records are kept well below the
// 64 KiB a record's data may take.
func chaosTXT(name string, strs []string) []mdns.RR {
	const maxRdata = 16 << 10
	var out []mdns.RR
	var cur *mdns.TXT
	size := 0
	for _, s := range strs {
		for first := true; first || len(s) > 0; first = false {
			chunk := s[:min(len(s), 255)]
			s = s[len(chunk):]
			if cur == nil || size+1+len(chunk) > maxRdata {
				cur = &mdns.TXT{Hdr: mdns.RR_Header{Name: name, Rrtype: mdns.TypeTXT, Class: mdns.ClassCHAOS}}
				out = append(out, cur)
				size = 0
			}
			// TXT strings are in presentation form: escape the escape.
			cur.Txt = append(cur.Txt, strings.ReplaceAll(chunk, `\`, `\\`))
			size += 1 + len(chunk)
		}
	}
	if len(out) == 0 {
		out = append(out, &mdns.TXT{Hdr: mdns.RR_Header{Name: name, Rrtype: mdns.TypeTXT, Class: mdns.ClassCHAOS}, Txt: []string{""}})
	}
	return out
}

// finish makes resp a well-formed reply to req without touching what the
// Answerer returned: the request's Id, QR set, and an OPT record (ours,
// with the Answerer's options) exactly when the request had one.
func (s *Server) finish(req, resp *mdns.Msg) *mdns.Msg {
	m := *resp
	m.Id = req.Id
	m.Response = true
	m.Answer = append([]mdns.RR(nil), resp.Answer...)
	m.Ns = append([]mdns.RR(nil), resp.Ns...)
	m.Extra = make([]mdns.RR, 0, len(resp.Extra)+1)
	var options []mdns.EDNS0
	for _, rr := range resp.Extra {
		if opt, ok := rr.(*mdns.OPT); ok {
			if options == nil {
				options = append([]mdns.EDNS0{}, opt.Option...)
			}
			continue
		}
		m.Extra = append(m.Extra, rr)
	}
	if m.Rcode < 0 || m.Rcode > 0xFFF {
		m.Rcode = mdns.RcodeServerFailure
	}
	if req.IsEdns0() != nil {
		opt := &mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT}, Option: options}
		opt.SetUDPSize(ednsUDPSize)
		m.Extra = append(m.Extra, opt)
	} else if m.Rcode > 0xF {
		m.Rcode = mdns.RcodeServerFailure // an extended rcode needs EDNS
	}
	return &m
}

// ServeDNS serves one query (mdns.Handler). Over UDP the answer is
// truncated (TC set) to what the client can take: 512 bytes without EDNS,
// else its advertised size but no more than the 1232 bytes this server
// advertises, so that answers are never fragmented.
func (s *Server) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	client := addrOf(w.RemoteAddr())
	resp := s.Handle(context.Background(), r, client)
	if resp == nil {
		return
	}
	resp.Compress = true
	if isUDP(w.RemoteAddr()) {
		size := mdns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = min(max(int(opt.UDPSize()), mdns.MinMsgSize), ednsUDPSize)
		}
		resp.Truncate(size)
		if resp.Truncated {
			s.st.Add("truncated", 1)
		}
	} else if resp.Len() > mdns.MaxMsgSize {
		resp.Truncate(mdns.MaxMsgSize)
	}
	if err := w.WriteMsg(resp); err != nil {
		s.st.Add("write_errors", 1)
		s.log.Debug("dns: cannot send the answer", "client", client.String(), "error", err)
	}
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

func isUDP(a net.Addr) bool {
	return a != nil && strings.HasPrefix(a.Network(), "udp")
}

// acceptMsg lets every query reach Handle, which judges it; responses are
// dropped unanswered.
func acceptMsg(dh mdns.Header) mdns.MsgAcceptAction {
	if dh.Bits&(1<<15) != 0 {
		return mdns.MsgIgnore
	}
	return mdns.MsgAccept
}

// Serve serves DNS on pc (UDP) and ln (TCP), either of which may be nil,
// until ctx is done, then shuts both down and returns nil. It returns the
// first error of either otherwise, after stopping the other.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, ln net.Listener) error {
	type run struct {
		srv     *mdns.Server
		started chan struct{}
		done    chan struct{}
		err     error
	}
	var runs []*run
	add := func(srv *mdns.Server) {
		r := &run{srv: srv, started: make(chan struct{}), done: make(chan struct{})}
		srv.Handler = s
		srv.MsgAcceptFunc = acceptMsg
		srv.MsgInvalidFunc = func([]byte, error) { s.st.Add("malformed", 1) }
		srv.UDPSize = 4096 // the read buffer: larger queries are malformed here
		srv.NotifyStartedFunc = func() { close(r.started) }
		runs = append(runs, r)
	}
	if pc != nil {
		add(&mdns.Server{PacketConn: pc, Net: "udp"})
	}
	if ln != nil {
		add(&mdns.Server{Listener: ln, Net: "tcp"})
	}
	if len(runs) == 0 {
		return errors.New("dns: nothing to serve on")
	}
	stopped := make(chan *run, len(runs))
	for _, r := range runs {
		go func() {
			r.err = r.srv.ActivateAndServe()
			if r.err == nil {
				r.err = errors.New("dns: server stopped")
			}
			close(r.done)
			stopped <- r
		}()
	}
	var first error
	select {
	case <-ctx.Done():
	case r := <-stopped:
		first = fmt.Errorf("dns: serving on %s: %w", r.srv.Net, r.err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, r := range runs {
		select {
		case <-r.started:
			if err := r.srv.ShutdownContext(sctx); err != nil {
				s.log.Debug("dns: shutdown", "net", r.srv.Net, "error", err)
			}
		case <-r.done:
		}
	}
	for _, r := range runs {
		<-r.done
	}
	return first
}

// ListenAndServe binds UDP and TCP on addr (the same port for both, the
// port of the UDP socket when addr asks for any) and calls Serve.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer pc.Close()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	_, port, err := net.SplitHostPort(pc.LocalAddr().String())
	if err != nil {
		return err
	}
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return err
	}
	defer ln.Close()
	// Bound the TCP connections served at once: the others wait in the
	// kernel's accept queue instead of each costing a goroutine and a
	// file descriptor.
	ln = netutil.LimitListener(ln, maxTCPConns)
	s.log.Info("dns: listening", "udp", pc.LocalAddr().String(), "tcp", ln.Addr().String())
	return s.Serve(ctx, pc, ln)
}
