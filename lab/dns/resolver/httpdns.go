package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
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
	if err := checkName(name); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid name " + quoteName(name) + ": " + err.Error()})
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

// Limits on a name to resolve (RFC 1035 section 2.3.4), in octets: one
// label, and the whole name in presentation format without its final dot.
const (
	maxLabel = 63
	maxName  = 253
)

// checkName says what is wrong with a name in presentation format: a NUL
// or another control byte (raw, or escaped as \DDD), a malformed escape,
// an empty label, a label over 63 octets (escapes decoded), or more than
// 253 octets in all. The root, ".", is a name.
func checkName(name string) error {
	for i := 0; i < len(name); i++ {
		if err := controlByte(name[i], fmt.Sprintf("at offset %d", i)); err != nil {
			return err
		}
	}
	if name == "." {
		return nil
	}
	size := len(name)
	label, octets := 1, 0 // the label being read and its octets so far
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '.':
			if err := checkLabel(label, octets); err != nil {
				return err
			}
			if i == len(name)-1 { // the final dot of a fully qualified name
				size--
				octets = -1
				continue
			}
			label, octets = label+1, 0
			continue
		case c == '\\' && i == len(name)-1:
			return errors.New("the name ends in a lone backslash")
		case c == '\\' && isDigit(name[i+1]):
			if i+3 >= len(name) || !isDigit(name[i+2]) || !isDigit(name[i+3]) {
				return fmt.Errorf(`malformed escape at offset %d: a backslash and a digit start \DDD, three digits`, i)
			}
			esc := name[i+1 : i+4]
			v := int(esc[0]-'0')*100 + int(esc[1]-'0')*10 + int(esc[2]-'0')
			if v > 255 {
				return fmt.Errorf(`malformed escape \%s at offset %d: more than 255`, esc, i)
			}
			if err := controlByte(byte(v), fmt.Sprintf(`escaped as \%s at offset %d`, esc, i)); err != nil {
				return err
			}
			i += 3
		case c == '\\':
			i++ // \X is X itself, a dot included
		}
		octets++
	}
	if octets >= 0 { // not fully qualified: the last label ends here
		if err := checkLabel(label, octets); err != nil {
			return err
		}
	}
	if size > maxName {
		return fmt.Errorf("the name is %d octets long, more than %d", size, maxName)
	}
	return nil
}

// checkLabel checks the length of label number n.
func checkLabel(n, octets int) error {
	switch {
	case octets == 0:
		return fmt.Errorf("label %d is empty", n)
	case octets > maxLabel:
		return fmt.Errorf("label %d is %d octets long, more than %d", n, octets, maxLabel)
	}
	return nil
}

// controlByte refuses a NUL or another ASCII control byte (DEL included).
func controlByte(c byte, where string) error {
	switch {
	case c == 0:
		return fmt.Errorf("the name holds a NUL byte (%s)", where)
	case c < 0x20 || c == 0x7f:
		return fmt.Errorf("the name holds the control byte 0x%02x (%s)", c, where)
	}
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// quoteName is name quoted for an error message, its control bytes
// escaped and cut after 80 bytes.
func quoteName(name string) string {
	const show = 80
	if len(name) > show {
		return strconv.QuoteToASCII(name[:show]) + fmt.Sprintf("… (%d bytes)", len(name))
	}
	return strconv.QuoteToASCII(name)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
