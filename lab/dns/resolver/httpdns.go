package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"labctl/lab/dns"

	mdns "github.com/miekg/dns"
)

// httpdnsTimeout bounds one HTTP resolution.
const httpdnsTimeout = 5 * time.Second

// HTTPDNS serves GET /resolve?name=N[&type=T], resolving on behalf of the
// HTTP client's own address, which goes upstream as an EDNS0 client
// subnet so that a GSLB answers for the client rather than for us.
type HTTPDNS struct {
	r   *Resolver
	st  *dns.Counters
	log *slog.Logger
}

// HTTPDNSAnswer is the JSON of a resolution. Its field names are a
// contract: the CLI and the tests read them.
type HTTPDNSAnswer struct {
	Name   string   `json:"name"`   // fully qualified
	Type   string   `json:"type"`   // "A"
	Client string   `json:"client"` // the address resolved for
	Rcode  string   `json:"rcode"`  // "NOERROR", "NXDOMAIN", ...
	IPs    []string `json:"ips"`    // addresses of the final RRset
	TTL    uint32   `json:"ttl"`    // smallest TTL of the answer (or of the negative answer's SOA)
	CNAME  []string `json:"cname"`  // the CNAME chain's targets, in order
	Answer []string `json:"answer"` // the answer section, presentation format
	Error  string   `json:"error,omitempty"`
}

// NewHTTPDNS builds the handler and its own resolver from cfg.Resolver,
// client subnet forced on.
func NewHTTPDNS(cfg *dns.HTTPDNSConfig, st *dns.Counters, log *slog.Logger) (*HTTPDNS, error) {
	if cfg == nil {
		return nil, errors.New("httpdns: no configuration")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rc := cfg.Resolver
	rc.ClientSubnet = true
	r, err := New(&rc, st, log)
	if err != nil {
		return nil, err
	}
	return &HTTPDNS{r: r, st: st, log: log}, nil
}

// Resolver is the handler's own resolver (to flush it, or name it).
func (h *HTTPDNS) Resolver() *Resolver { return h.r }

func (h *HTTPDNS) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	h.st.Add("httpdns_requests", 1)
	if req.URL.Path != "/resolve" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found: " + req.URL.Path})
		return
	}
	if req.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method " + req.Method + " not allowed"})
		return
	}
	q := req.URL.Query()
	name := q.Get("name")
	if name == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "missing name"})
		return
	}
	if err := dns.CheckName(name); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid name " + dns.QuoteName(name) + ": " + err.Error()})
		return
	}
	tname := strings.ToUpper(q.Get("type"))
	if tname == "" {
		tname = "A"
	}
	qtype, ok := mdns.StringToType[tname]
	if !ok {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unknown type: " + q.Get("type")})
		return
	}
	if dns.MetaType(qtype) {
		// Zone transfers, OPT, TSIG and the like are not questions to
		// resolve; the DNS front turns them away too.
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "not a resolvable type: " + tname})
		return
	}
	ap, err := netip.ParseAddrPort(req.RemoteAddr)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "client address: " + err.Error()})
		return
	}
	client := ap.Addr().Unmap()

	fqdn := dns.Fqdn(name)
	m := new(mdns.Msg)
	m.SetQuestion(fqdn, qtype)
	ctx, cancel := context.WithTimeout(req.Context(), httpdnsTimeout)
	defer cancel()
	reply := h.r.Answer(ctx, m, client)

	out := HTTPDNSAnswer{
		Name:   fqdn,
		Type:   tname,
		Client: client.String(),
		Rcode:  dns.RcodeName(reply.Rcode),
		IPs:    []string{},
		CNAME:  []string{},
		Answer: rrStrings(reply.Answer),
	}
	ttls := reply.Answer
	if len(ttls) == 0 {
		ttls = reply.Ns
	}
	out.TTL = minTTL(ttls)
	for _, rr := range reply.Answer {
		if c, ok := rr.(*mdns.CNAME); ok && qtype != mdns.TypeCNAME {
			out.CNAME = append(out.CNAME, c.Target)
		}
	}
	for _, a := range rrAddrs(reply.Answer) {
		out.IPs = append(out.IPs, a.String())
	}
	status := http.StatusOK
	switch reply.Rcode {
	case mdns.RcodeSuccess, mdns.RcodeNameError:
	case mdns.RcodeRefused:
		status = http.StatusForbidden
		out.Error = "refused"
	default:
		status = http.StatusBadGateway
		out.Error = "resolution failed: " + out.Rcode
	}
	writeJSON(w, status, out)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
