package resolver

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"labctl/lab/dns"
)

func newHTTPDNS(t *testing.T, w *world) (*HTTPDNS, *dns.Counters) {
	t.Helper()
	st := new(dns.Counters)
	h, err := NewHTTPDNS(&dns.HTTPDNSConfig{Listen: ":8053", Resolver: dns.ResolverConfig{
		Hints: []dns.Hint{{Name: "a.root.", Address: "127.0.0.2"}},
	}}, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Resolver().Name = "httpdns"
	h.r.port, h.r.timeout = w.port, 200*time.Millisecond
	return h, st
}

// get serves one request from remote and decodes the JSON body.
func get(t *testing.T, h http.Handler, method, target, remote string) (int, http.Header, map[string]any, *HTTPDNSAnswer) {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	req.RemoteAddr = remote
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: content type %q", method, target, ct)
	}
	body := rec.Body.Bytes()
	raw := map[string]any{}
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("%s %s: %v: %s", method, target, err, body)
	}
	ans := new(HTTPDNSAnswer)
	if err := json.Unmarshal(body, ans); err != nil {
		t.Fatal(err)
	}
	return rec.Code, rec.Header(), raw, ans
}

func TestHTTPDNSAnswers(t *testing.T) {
	w := newWorld(t)
	h, st := newHTTPDNS(t, w)

	code, _, raw, a := get(t, h, "GET", "/resolve?name=www.shop.example", "198.51.100.3:40000")
	if code != 200 {
		t.Fatalf("code %d: %v", code, raw)
	}
	for _, f := range []string{"name", "type", "client", "rcode", "ips", "ttl", "cname", "answer"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("field %q missing: %v", f, raw)
		}
	}
	want := &HTTPDNSAnswer{
		Name: "www.shop.example.", Type: "A", Client: "198.51.100.3", Rcode: "NOERROR",
		IPs: []string{"192.0.2.1"}, TTL: 60, CNAME: []string{"www.gslb.example."},
		Answer: a.Answer,
	}
	if !reflect.DeepEqual(a, want) || len(a.Answer) != 2 || !strings.Contains(a.Answer[1], "192.0.2.1") {
		t.Fatalf("answer %+v", a)
	}

	// Another client, another region: the GSLB saw each client's subnet.
	_, _, _, a = get(t, h, "GET", "/resolve?name=www.shop.example.&type=a", "203.0.113.7:40000")
	if !reflect.DeepEqual(a.IPs, []string{"192.0.2.2"}) || a.Client != "203.0.113.7" {
		t.Fatalf("answer %+v", a)
	}
	_, _, _, a = get(t, h, "GET", "/resolve?name=www.shop.example.", "[::ffff:198.51.100.9]:40000")
	if !reflect.DeepEqual(a.IPs, []string{"192.0.2.1"}) || a.Client != "198.51.100.9" {
		t.Fatalf("answer %+v", a)
	}
	// X-Forwarded-For is not believed.
	req := httptest.NewRequest("GET", "/resolve?name=www.shop.example", nil)
	req.RemoteAddr = "192.0.2.200:1"
	req.Header.Set("X-Forwarded-For", "198.51.100.3")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if !strings.Contains(rec.Body.String(), `"ips":["192.0.2.99"]`) {
		t.Fatalf("X-Forwarded-For trusted: %s", rec.Body)
	}

	// Any type mdns knows; NODATA is an empty success.
	code, _, raw, a = get(t, h, "GET", "/resolve?name=api.shop.example&type=AAAA", "198.51.100.3:1")
	if code != 200 || a.Rcode != "NOERROR" || a.Type != "AAAA" || len(a.IPs) != 0 || raw["ips"] == nil {
		t.Fatalf("NODATA: %d %v", code, raw)
	}
	code, _, _, a = get(t, h, "GET", "/resolve?name=big.shop.example&type=txt", "198.51.100.3:1")
	if code != 200 || len(a.Answer) != 1 || len(a.IPs) != 0 {
		t.Fatalf("TXT: %d %+v", code, a)
	}

	// NXDOMAIN is an answer too.
	code, _, raw, a = get(t, h, "GET", "/resolve?name=nope.shop.example", "198.51.100.3:1")
	if code != 200 || a.Rcode != "NXDOMAIN" || len(a.IPs) != 0 || raw["ips"] == nil || a.TTL != 60 {
		t.Fatalf("NXDOMAIN: %d %v", code, raw)
	}

	// A resolution that fails is a bad gateway.
	code, _, raw, a = get(t, h, "GET", "/resolve?name=www.alldead.example", "198.51.100.3:1")
	if code != http.StatusBadGateway || a.Rcode != "SERVFAIL" || raw["error"] == nil {
		t.Fatalf("SERVFAIL: %d %v", code, raw)
	}
	if got := st.Get("httpdns_requests"); got != 8 {
		t.Fatalf("httpdns_requests = %d", got)
	}
}

func TestHTTPDNSErrors(t *testing.T) {
	w := newWorld(t)
	h, st := newHTTPDNS(t, w)
	for _, c := range []struct {
		method, target string
		code           int
	}{
		{"GET", "/resolve", 400},
		{"GET", "/resolve?name=", 400},
		{"GET", "/resolve?name=a..b", 400},
		{"GET", "/resolve?name=" + strings.Repeat("a.", 127) + "aa", 400},
		{"GET", "/resolve?name=api.shop.example&type=BOGUS", 400},
		{"GET", "/resolve?name=api.shop.example&type=AXFR", 400},
		{"GET", "/resolve?name=api.shop.example&type=ixfr", 400},
		{"GET", "/resolve?name=api.shop.example&type=OPT", 400},
		{"GET", "/resolve?name=api.shop.example&type=TSIG", 400},
		{"GET", "/resolve?name=api.shop.example&type=TKEY", 400},
		{"POST", "/resolve?name=api.shop.example", 405},
		{"GET", "/", 404},
		{"GET", "/resolve/x?name=api.shop.example", 404},
	} {
		code, hdr, raw, _ := get(t, h, c.method, c.target, "198.51.100.3:1")
		if code != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.target, code, c.code)
		}
		if e, _ := raw["error"].(string); e == "" {
			t.Errorf("%s %s: no error in %v", c.method, c.target, raw)
		}
		if c.code == 405 && hdr.Get("Allow") != "GET" {
			t.Errorf("Allow %q", hdr.Get("Allow"))
		}
	}
	if got := st.Get("upstream_queries"); got != 0 {
		t.Fatalf("bad requests went upstream: %d", got)
	}
}

// TestHTTPDNSRejectsBadNames: a name with a NUL or another control byte
// (raw or escaped), an empty label, a label over 63 octets or a name over
// 253 is a 400 whose error names the problem, and never goes upstream;
// names at the limits are resolved.
func TestHTTPDNSRejectsBadNames(t *testing.T) {
	w := newWorld(t)
	h, st := newHTTPDNS(t, w)
	label63 := strings.Repeat("a", 63)
	name253 := strings.Repeat(label63+".", 3) + strings.Repeat("b", 61) // 3×(63+1) + 61 = 253 octets
	for _, c := range []struct{ name, problem string }{
		{"a\x00b.shop.example", "NUL"},
		{"api.shop.example\x00", "NUL"},
		{"\x00", "NUL"},
		{`a\000b.shop.example`, "NUL"},
		{"a\x01b.shop.example", "control byte 0x01"},
		{"a\nb.shop.example", "control byte 0x0a"},
		{"a\x7fb.shop.example", "control byte 0x7f"},
		{`a\031b.shop.example`, "control byte 0x1f"},
		{"a..b.shop.example", "label 2 is empty"},
		{".shop.example", "label 1 is empty"},
		{"shop.example..", "label 3 is empty"},
		{strings.Repeat("a", 64) + ".shop.example", "label 1 is 64 octets long"},
		{"x." + strings.Repeat("a", 200) + ".shop.example", "label 2 is 200 octets long"},
		{name253 + "b", "254 octets long"},
		{name253 + "b.", "254 octets long"},
		{`a\`, "ends in a lone backslash"},
		{`a\25`, "escape"},
		{`a\256.example`, "escape"},
	} {
		target := "/resolve?name=" + url.QueryEscape(c.name)
		code, _, raw, _ := get(t, h, "GET", target, "198.51.100.3:1")
		e, _ := raw["error"].(string)
		if code != http.StatusBadRequest || !strings.Contains(e, c.problem) {
			t.Errorf("%q: %d %q, want 400 naming %q", c.name, code, e, c.problem)
		}
	}
	if got := st.Get("upstream_queries"); got != 0 {
		t.Fatalf("bad names went upstream: %d queries", got)
	}
	// Escapes count as the octet they stand for: 3 labels of 50 octets,
	// each written as 200 characters, make a name of 163 octets.
	escaped := strings.Repeat(strings.Repeat(`\097`, 50)+".", 3) + "shop.example"
	if code, _, raw, _ := get(t, h, "GET", "/resolve?name="+url.QueryEscape(escaped), "198.51.100.3:1"); code == http.StatusBadRequest {
		t.Errorf("a name of 163 octets written with escapes: %d %v, want it resolved", code, raw)
	}
	for _, name := range []string{label63 + ".shop.example", name253, name253 + ".", "api.shop.example.", `a\.b.shop.example`} {
		code, _, raw, _ := get(t, h, "GET", "/resolve?name="+url.QueryEscape(name), "198.51.100.3:1")
		if code != http.StatusOK {
			t.Errorf("%q: %d %v, want 200", name, code, raw)
		}
	}
}

// TestHTTPDNSOverTCP serves HTTP for real, clients on two loopback
// addresses.
func TestHTTPDNSOverTCP(t *testing.T) {
	w := newWorld(t)
	h, _ := newHTTPDNS(t, w)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	for _, c := range []string{"127.0.0.21", "127.0.0.22"} {
		cl := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(c)},
		}).DialContext}}
		resp, err := cl.Get(srv.URL + "/resolve?name=api.shop.example")
		if err != nil {
			t.Fatal(err)
		}
		var a HTTPDNSAnswer
		err = json.NewDecoder(resp.Body).Decode(&a)
		resp.Body.Close()
		cl.CloseIdleConnections()
		if err != nil || resp.StatusCode != 200 || a.Client != c || !reflect.DeepEqual(a.IPs, []string{"192.0.2.10"}) {
			t.Fatalf("%s: %d %+v %v", c, resp.StatusCode, a, err)
		}
	}
}
