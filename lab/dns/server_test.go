package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// startServer serves srv on 127.0.0.1, UDP and TCP on one random port,
// until the test ends.
func startServer(t *testing.T, srv *Server) string {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ; try++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if try == 10 {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, pc, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return")
		}
		pc.Close()
		ln.Close()
	})
	return pc.LocalAddr().String()
}

func newSampleServer(t *testing.T) (string, *Counters) {
	t.Helper()
	a, st := newSampleAuthority(t, newFakeNet())
	return startServer(t, NewServer(a, st, nil, nil)), st
}

func exchange(t *testing.T, network, addr string, m *mdns.Msg) *mdns.Msg {
	t.Helper()
	c := &mdns.Client{Net: network, Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %v: %v", network, m.Question, err)
	}
	if r.Id != m.Id {
		t.Fatalf("id %d, want %d", r.Id, m.Id)
	}
	return r
}

// raw sends b over UDP and returns the answer, nil when none comes
// within wait.
func raw(t *testing.T, addr string, b []byte, wait time.Duration) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func rawReply(t *testing.T, addr string, b []byte) *mdns.Msg {
	t.Helper()
	out := raw(t, addr, b, 3*time.Second)
	if out == nil {
		t.Fatalf("no answer to % x", b)
	}
	m := new(mdns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatalf("answer does not unpack: %v", err)
	}
	if m.Id != binary.BigEndian.Uint16(b) || !m.Response {
		t.Fatalf("bad answer header: %v", m)
	}
	return m
}

// header is a query header: id, flags, and the four counts.
func header(id uint16, opcode int, qd, an, ns, ar uint16) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], uint16(opcode)<<11)
	binary.BigEndian.PutUint16(b[4:], qd)
	binary.BigEndian.PutUint16(b[6:], an)
	binary.BigEndian.PutUint16(b[8:], ns)
	binary.BigEndian.PutUint16(b[10:], ar)
	return b
}

func TestServerWire(t *testing.T) {
	addr, st := newSampleServer(t)

	valid := func() {
		t.Helper()
		for _, network := range []string{"udp", "tcp"} {
			r := exchange(t, network, addr, query("host.test.", mdns.TypeA))
			if r.Rcode != mdns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 2 {
				t.Fatalf("%s: host.test. A: %v", network, r)
			}
		}
	}
	valid()

	// Shorter than a header: ignored, and the server goes on.
	if out := raw(t, addr, []byte{0x12, 0x34, 0x01}, 200*time.Millisecond); out != nil {
		t.Errorf("an answer to 3 bytes: % x", out)
	}
	valid()

	// A header announcing a question that is not there.
	r := rawReply(t, addr, header(0x4242, 0, 1, 0, 0, 0))
	wantRcode(t, r, mdns.RcodeFormatError)

	// A question cut short.
	b := append(header(0x4243, 0, 1, 0, 0, 0), 4, 'h', 'o')
	r = rawReply(t, addr, b)
	wantRcode(t, r, mdns.RcodeFormatError)

	// A 64-byte label (its length byte is a reserved label type).
	b = append(header(0x4244, 0, 1, 0, 0, 0), 64)
	b = append(b, strings.Repeat("a", 64)...)
	b = append(b, 0, 0, 1, 0, 1)
	r = rawReply(t, addr, b)
	wantRcode(t, r, mdns.RcodeFormatError)

	// A name of more than 255 bytes: five labels of 63.
	b = header(0x4245, 0, 1, 0, 0, 0)
	for range 5 {
		b = append(b, 63)
		b = append(b, strings.Repeat("b", 63)...)
	}
	b = append(b, 0, 0, 1, 0, 1)
	r = rawReply(t, addr, b)
	wantRcode(t, r, mdns.RcodeFormatError)

	// Two questions.
	m := query("host.test.", mdns.TypeA)
	m.Question = append(m.Question, mdns.Question{Name: "test.", Qtype: mdns.TypeSOA, Qclass: mdns.ClassINET})
	r = exchange(t, "udp", addr, m)
	wantRcode(t, r, mdns.RcodeFormatError)

	// NOTIFY and UPDATE are not implemented.
	for _, op := range []int{mdns.OpcodeNotify, mdns.OpcodeUpdate} {
		m = query("test.", mdns.TypeSOA)
		m.Opcode = op
		r = exchange(t, "udp", addr, m)
		wantRcode(t, r, mdns.RcodeNotImplemented)
		if r.Opcode != op {
			t.Errorf("opcode %d answered with %d", op, r.Opcode)
		}
	}

	// A type nobody knows: NODATA with the SOA.
	r = exchange(t, "udp", addr, query("host.test.", 65280))
	wantNegative(t, r, mdns.RcodeSuccess, "test.", 60)

	// Class HESIOD, a zone transfer, a meta type.
	m = query("test.", mdns.TypeSOA)
	m.Question[0].Qclass = mdns.ClassHESIOD
	wantRcode(t, exchange(t, "udp", addr, m), mdns.RcodeRefused)
	wantRcode(t, exchange(t, "tcp", addr, query("test.", mdns.TypeAXFR)), mdns.RcodeRefused)
	wantRcode(t, exchange(t, "udp", addr, query("test.", mdns.TypeIXFR)), mdns.RcodeRefused)
	wantRcode(t, exchange(t, "udp", addr, query("test.", mdns.TypeOPT)), mdns.RcodeFormatError)
	wantRcode(t, exchange(t, "udp", addr, query("test.", mdns.TypeTSIG)), mdns.RcodeFormatError)

	// EDNS version 1: BADVERS, with an OPT of version 0.
	m = query("host.test.", mdns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	r = exchange(t, "udp", addr, m)
	wantRcode(t, r, mdns.RcodeBadVers)
	if opt := r.IsEdns0(); opt == nil || opt.Version() != 0 || len(r.Answer) != 0 {
		t.Errorf("BADVERS: %v", r)
	}
	// EDNS version 0: an OPT comes back.
	m = query("host.test.", mdns.TypeA)
	m.SetEdns0(4096, false)
	r = exchange(t, "udp", addr, m)
	if opt := r.IsEdns0(); r.Rcode != mdns.RcodeSuccess || opt == nil || opt.UDPSize() != 1232 {
		t.Errorf("EDNS query: %v", r)
	}

	// A large answer: truncated over UDP without EDNS, whole over TCP.
	r = exchange(t, "udp", addr, query("big.shop.test.", mdns.TypeTXT))
	if !r.Truncated || len(r.Answer) >= 40 {
		t.Errorf("UDP: TC=%v with %d records", r.Truncated, len(r.Answer))
	}
	if r.Compress = true; r.Len() > 512 {
		t.Errorf("UDP answer of %d bytes", r.Len())
	}
	r = exchange(t, "tcp", addr, query("big.shop.test.", mdns.TypeTXT))
	if r.Truncated || len(r.Answer) != 40 {
		t.Errorf("TCP: TC=%v with %d records", r.Truncated, len(r.Answer))
	}

	// An answer to a response would start a loop: none.
	m = query("host.test.", mdns.TypeA)
	m.Response = true
	p, _ := m.Pack()
	if out := raw(t, addr, p, 200*time.Millisecond); out != nil {
		t.Errorf("an answer to a response")
	}

	// Counters over CHAOS.
	stats := func() map[string]int64 {
		t.Helper()
		m := query(StatsName, mdns.TypeTXT)
		m.Question[0].Qclass = mdns.ClassCHAOS
		r := exchange(t, "tcp", addr, m)
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) == 0 {
			t.Fatalf("stats: %v", r)
		}
		out := map[string]int64{}
		for _, rr := range r.Answer {
			txt := rr.(*mdns.TXT)
			if txt.Hdr.Class != mdns.ClassCHAOS {
				t.Errorf("stats in class %d", txt.Hdr.Class)
			}
			for _, s := range txt.Txt {
				k, v, _ := strings.Cut(s, "=")
				out[k], _ = strconv.ParseInt(v, 10, 64)
			}
		}
		return out
	}
	before := stats()
	exchange(t, "udp", addr, query("nothere.test.", mdns.TypeA))
	after := stats()
	if after["queries"] != before["queries"]+2 || after["nxdomain"] != before["nxdomain"]+1 || after["rcode_NXDOMAIN"] != before["rcode_NXDOMAIN"]+1 {
		t.Errorf("counters before %v, after %v", before, after)
	}
	for _, k := range []string{"rcode_FORMERR", "rcode_NOTIMP", "rcode_REFUSED", "rcode_BADVERS", "truncated", "malformed"} {
		if after[k] == 0 {
			t.Errorf("counter %s = 0: %v", k, after)
		}
	}
	if st.Get("queries") != after["queries"] {
		t.Errorf("stats are not the server's counters")
	}

	// Other CHAOS names, and flush without a cache.
	for _, n := range []string{"version.bind.", FlushName, "STATS.LABCTL."} {
		m = query(n, mdns.TypeTXT)
		m.Question[0].Qclass = mdns.ClassCHAOS
		r = exchange(t, "udp", addr, m)
		want := mdns.RcodeRefused
		if n == "STATS.LABCTL." {
			want = mdns.RcodeSuccess
		}
		wantRcode(t, r, want)
	}
	m = query(StatsName, mdns.TypeA)
	m.Question[0].Qclass = mdns.ClassCHAOS
	wantRcode(t, exchange(t, "udp", addr, m), mdns.RcodeRefused)
	valid()
}

func TestServerFlush(t *testing.T) {
	st := &Counters{}
	n := 0
	srv := NewServer(panicky{}, st, func() int { n++; return 41 + n }, nil)
	addr := startServer(t, srv)
	m := query(FlushName, mdns.TypeTXT)
	m.Question[0].Qclass = mdns.ClassCHAOS
	r := exchange(t, "udp", addr, m)
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*mdns.TXT).Txt[0] != "flushed=42" {
		t.Errorf("flush: %v", r)
	}
}

func TestServerAdmit(t *testing.T) {
	st := &Counters{}
	flushes := 0
	srv := NewServer(panicky{}, st, func() int { flushes++; return 0 }, nil)
	allowed := netip.MustParseAddr("192.0.2.1")
	srv.Admit = func(a netip.Addr) bool { return a == allowed }
	for _, name := range []string{FlushName, StatsName} {
		m := query(name, mdns.TypeTXT)
		m.Question[0].Qclass = mdns.ClassCHAOS
		if r := srv.Handle(context.Background(), m, netip.MustParseAddr("198.51.100.7")); r.Rcode != mdns.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("%s from a stranger: %v", name, r)
		}
		if r := srv.Handle(context.Background(), m, allowed); r.Rcode != mdns.RcodeSuccess || len(r.Answer) == 0 {
			t.Errorf("%s from an admitted client: %v", name, r)
		}
	}
	if flushes != 1 {
		t.Errorf("%d flushes, want 1", flushes)
	}
	if got := st.Get("refused"); got != 2 {
		t.Errorf("refused = %d, want 2", got)
	}
	if got := st.Get("rcode_REFUSED"); got != 2 {
		t.Errorf("rcode_REFUSED = %d, want 2", got)
	}
}

// panicky panics for boom. and answers everything else with NODATA.
type panicky struct{}

func (panicky) Answer(ctx context.Context, req *mdns.Msg, client netip.Addr) *mdns.Msg {
	if req.Question[0].Name == "boom." {
		panic("boom")
	}
	if _, ok := ctx.Deadline(); !ok {
		panic("no deadline")
	}
	m := new(mdns.Msg).SetReply(req)
	if client.String() != "127.0.0.1" {
		m.Rcode = mdns.RcodeServerFailure
	}
	// An option of the answerer's own, in an OPT the front replaces.
	m.SetEdns0(512, true)
	m.IsEdns0().Option = append(m.IsEdns0().Option, &mdns.EDNS0_LOCAL{Code: TraceOption, Data: []byte(`{}`)})
	return m
}

func TestServerPanic(t *testing.T) {
	st, lr := &Counters{}, &logRecorder{}
	srv := NewServer(panicky{}, st, nil, slog.New(lr))
	addr := startServer(t, srv)
	for range 2 {
		r := exchange(t, "udp", addr, query("boom.", mdns.TypeA))
		wantRcode(t, r, mdns.RcodeServerFailure)
		r = exchange(t, "tcp", addr, query("fine.", mdns.TypeA))
		wantRcode(t, r, mdns.RcodeSuccess)
		if r.IsEdns0() != nil {
			t.Errorf("an OPT in the answer to a query without: %v", r)
		}
	}
	if st.Get("panics") != 2 || lr.count("panicked") != 2 {
		t.Errorf("panics: %v", st.Strings())
	}
	lr.mu.Lock()
	stack := false
	lr.recs[0].Attrs(func(a slog.Attr) bool {
		stack = stack || (a.Key == "stack" && strings.Contains(a.Value.String(), "panicky.Answer"))
		return true
	})
	lr.mu.Unlock()
	if !stack {
		t.Errorf("no stack in the panic log")
	}
	// The answerer's EDNS options survive; its OPT does not.
	m := query("fine.", mdns.TypeA)
	m.SetEdns0(4096, false)
	r := exchange(t, "udp", addr, m)
	opt := r.IsEdns0()
	if opt == nil || opt.UDPSize() != 1232 || opt.Do() || len(opt.Option) != 1 || opt.Option[0].Option() != TraceOption {
		t.Errorf("EDNS answer: %v", r)
	}
}

func TestServerLongStats(t *testing.T) {
	st := &Counters{}
	st.Add("gslb_region_"+strings.Repeat("x", 300), 1)
	st.Add(`back\slash`, 2)
	srv := NewServer(panicky{}, st, nil, nil)
	m := query(StatsName, mdns.TypeTXT)
	m.Question[0].Qclass = mdns.ClassCHAOS
	r := srv.Handle(context.Background(), m, netip.MustParseAddr("192.0.2.1"))
	p, err := r.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var back mdns.Msg
	if err := back.Unpack(p); err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(back.Answer[0].(*mdns.TXT).Txt, "")
	if !strings.Contains(joined, strings.Repeat("x", 300)+"=1") || !strings.Contains(joined, `back\\slash=2`) {
		t.Errorf("stats: %v", back.Answer)
	}
}

func TestListenAndServe(t *testing.T) {
	a, st := newSampleAuthority(t, newFakeNet())
	srv := NewServer(a, st, nil, nil)
	var addr string
	var errc chan error
	var cancel context.CancelFunc
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = pc.LocalAddr().String()
		pc.Close()
		var ctx context.Context
		ctx, cancel = context.WithCancel(context.Background())
		errc = make(chan error, 1)
		go func() { errc <- srv.ListenAndServe(ctx, addr) }()
		c := &mdns.Client{Net: "tcp", Timeout: time.Second}
		var r *mdns.Msg
		for range 50 {
			if r, _, err = c.Exchange(query("host.test.", mdns.TypeA), addr); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err == nil && r.Rcode == mdns.RcodeSuccess {
			break
		}
		cancel()
		<-errc
		if try == 5 {
			t.Fatalf("ListenAndServe never answered: %v", err)
		}
	}
	exchange(t, "udp", addr, query("host.test.", mdns.TypeA))
	// A second server on the same address fails; the timeout turns a
	// wrong success (serving until ctx is done) into a failure, not a hang.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	err := NewServer(a, st, nil, nil).ListenAndServe(ctx2, addr)
	timedOut := ctx2.Err() != nil
	cancel2()
	if err == nil || timedOut {
		t.Errorf("a second ListenAndServe on %s did not fail (error %v, timed out %v)", addr, err, timedOut)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("ListenAndServe: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ListenAndServe did not return")
	}
}
