package engine_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"labctl/lab/bgp"
	"labctl/lab/cli"
	"labctl/lab/dns"
	"labctl/lab/dns/resolver"
	"labctl/lab/internal/labtest"
	"labctl/lab/netns"
	"labctl/lab/topology"
)

// The DNS world end to end on topologies/internet.yaml: real servers in
// their nodes' namespaces, real packets through the carriers and the
// transit AS, the resolvers' caches, the GSLB's health checks.

var (
	eastVIPs  = []string{"203.0.113.11", "203.0.113.12", "203.0.113.13"}
	northVIPs = []string{"203.0.113.21", "203.0.113.22", "203.0.113.23"}
)

const (
	resolverA = "198.51.100.18" // dns-a, carrier A's resolver
	resolverB = "198.51.100.82" // dns-b
	shopNS    = "203.0.113.53"  // ns1, the shop's authoritative server
	gslbNS    = "203.0.113.54"
	httpdnsIP = "203.0.113.80"
	shopName  = "www.shop.example"
)

// query asks server from inside a node.
func query(t *testing.T, lab, node, server, name string, qtype uint16, o dns.QueryOptions) *dns.Result {
	t.Helper()
	var res *dns.Result
	err := netns.Do(topology.Namespace(lab, node), func() error {
		var err error
		res, err = dns.Query(context.Background(), server, name, qtype, o)
		return err
	})
	if err != nil {
		t.Fatalf("%s asks %s for %s: %v", node, server, name, err)
	}
	return res
}

// stats reads a server's counters from inside a node.
func stats(t *testing.T, lab, node, server string) map[string]int64 {
	t.Helper()
	var st map[string]int64
	err := netns.Do(topology.Namespace(lab, node), func() error {
		var err error
		st, err = dns.ReadStats(context.Background(), server)
		return err
	})
	if err != nil {
		t.Fatalf("stats of %s from %s: %v", server, node, err)
	}
	return st
}

// labctlDig runs `labctl dig --format json` as a user would.
func labctlDig(t *testing.T, lab string, args ...string) cli.DigResult {
	t.Helper()
	out, err := exec.Command(labctlBin, append([]string{"dig", "--lab", lab, "--format", "json"}, args...)...).Output()
	if err != nil {
		t.Fatalf("labctl dig %v: %v\n%s", args, err, out)
	}
	var r cli.DigResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("labctl dig %v: %v\n%s", args, err, out)
	}
	return r
}

// sameAddrs compares two address lists as sets: the GSLB and the
// resolvers rotate their order from answer to answer.
func sameAddrs(got, want []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want)))
}

func addrsOf(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out
}

// httpdns asks the HTTPDNS endpoint from inside a node, with curl.
func httpdns(t *testing.T, lab, node, name string) resolver.HTTPDNSAnswer {
	t.Helper()
	out := mustRun(t, lab, node, "curl", "-sS", "--max-time", "5", "http://"+httpdnsIP+"/resolve?name="+name)
	var a resolver.HTTPDNSAnswer
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("httpdns from %s: %v\n%s", node, err, out)
	}
	slices.Sort(a.IPs)
	return a
}

// raw sends one hand-made UDP packet from inside a node and returns the
// reply (nil if none came within a second).
func raw(t *testing.T, lab, node, server string, pkt []byte) *mdns.Msg {
	t.Helper()
	var reply []byte
	err := netns.Do(topology.Namespace(lab, node), func() error {
		c, err := net.Dial("udp", net.JoinHostPort(server, "53"))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write(pkt); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		if err != nil {
			return nil // no reply
		}
		reply = buf[:n]
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if reply == nil {
		return nil
	}
	m := new(mdns.Msg)
	if err := m.Unpack(reply); err != nil {
		t.Fatalf("reply from %s does not parse: %v", server, err)
	}
	return m
}

// header is a DNS header with the given id, flags and counts.
func header(id, flags, qd uint16) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint16(b[4:], qd)
	return b
}

// question is a wire-format question for labels (unchecked lengths).
func question(qtype uint16, labels ...string) []byte {
	var b []byte
	for _, l := range labels {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	b = append(b, 0, 0, 0, 0, 1)
	binary.BigEndian.PutUint16(b[len(b)-4:], qtype)
	return b
}

func TestDNS(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	labtest.RequireTool(t, "dig", "curl", "tcpdump")
	before := rootSnapshot(t)
	lab := labtest.LabName("dns")
	tp := labTopology(t, "internet", lab)
	e, downed := upForTest(t, tp)
	ctx := context.Background()
	if _, _, err := bgp.Wait(ctx, lab, time.Minute); err != nil {
		t.Fatal(err)
	}
	who := tp.IPv4Owners()

	t.Run("each carrier's subscribers resolve to their nearest region", func(t *testing.T) {
		a := labctlDig(t, lab, "ue1", shopName)
		slices.Sort(a.Addresses)
		if a.Rcode != "NOERROR" || !sameAddrs(a.Addresses, eastVIPs) {
			t.Fatalf("ue1: %s %v, want carrier A's region east %v\n%+v", a.Rcode, a.Addresses, eastVIPs, a)
		}
		if a.ServerNode != "dns-a" || a.Trace == nil || a.Trace.Cached {
			t.Fatalf("ue1's answer should come from dns-a resolving afresh: server %s, trace %+v", a.ServerNode, a.Trace)
		}
		// The whole chain, in order: root, the TLD, the shop's server (the
		// CNAME, then the GSLB's delegation), the GSLB.
		var chain []string
		for _, s := range a.Trace.Steps {
			if !s.Cache {
				chain = append(chain, who[addr(s.Server)]+":"+s.Kind)
			}
		}
		want := []string{"root:referral", "tld:referral", "ns1:cname", "ns1:referral", "gslb:answer"}
		if !slices.Equal(chain, want) {
			t.Errorf("ue1's resolution: %v, want %v", chain, want)
		}
		if len(a.Answer) == 0 || !strings.Contains(a.Answer[0], "CNAME\twww.gslb.shop.example.") {
			t.Errorf("the answer should start with the shop's CNAME: %v", a.Answer)
		}

		b := labctlDig(t, lab, "home1", shopName)
		slices.Sort(b.Addresses)
		if b.ServerNode != "dns-b" || !sameAddrs(b.Addresses, northVIPs) {
			t.Fatalf("home1: %v from %s, want carrier B's region north %v from dns-b", b.Addresses, b.ServerNode, northVIPs)
		}

		// The real dig tool reads the node's /etc/netns resolv.conf.
		for node, vips := range map[string][]string{"ue1": eastVIPs, "home1": northVIPs} {
			out := strings.Fields(mustRun(t, lab, node, "dig", "+short", "+tries=1", shopName))
			var got []string
			for _, f := range out {
				if strings.HasPrefix(f, "203.") {
					got = append(got, f)
				}
			}
			slices.Sort(got)
			if !sameAddrs(got, vips) {
				t.Errorf("dig on %s: %v, want %v", node, out, vips)
			}
		}
	})

	t.Run("HTTPDNS answers for the client's own address", func(t *testing.T) {
		a := httpdns(t, lab, "ue1", shopName)
		if !sameAddrs(a.IPs, eastVIPs) || !strings.HasPrefix(a.Client, "198.51.100.") {
			t.Errorf("ue1 via HTTPDNS: %+v, want %v for a carrier A pool address", a, eastVIPs)
		}
		// An asker no rule covers (the cloud's own web host) gets the
		// default order; its answer must not be handed to home1 after it.
		if o := httpdns(t, lab, "web", shopName); !sameAddrs(o.IPs, eastVIPs) {
			t.Errorf("web via HTTPDNS: %+v, want the default region east %v", o, eastVIPs)
		}
		b := httpdns(t, lab, "home1", shopName)
		if !sameAddrs(b.IPs, northVIPs) {
			t.Errorf("home1 via HTTPDNS: %+v, want %v", b, northVIPs)
		}
	})

	t.Run("the resolver answers again from its cache, and asks again after the TTL", func(t *testing.T) {
		before := stats(t, lab, "ue1", resolverA)
		var res *dns.Result
		// dns-a sends nothing upstream: no packet leaves it for port 53.
		pk := capture(t, lab, "dns-a", "eth0", "udp dst port 53 or tcp dst port 53", func() {
			res = query(t, lab, "ue1", resolverA, shopName, mdns.TypeA, dns.QueryOptions{Trace: true})
		})
		after := stats(t, lab, "ue1", resolverA)
		if !sameAddrs(addrsOf(res.Msg), eastVIPs) || res.Trace == nil || !res.Trace.Cached {
			t.Fatalf("second query: %v, trace %+v; want east from the cache", addrsOf(res.Msg), res.Trace)
		}
		if d := after["upstream_queries"] - before["upstream_queries"]; d != 0 {
			t.Errorf("upstream_queries grew by %d for a cached answer", d)
		}
		if after["cache_hits"] <= before["cache_hits"] {
			t.Errorf("cache_hits did not grow: %d → %d", before["cache_hits"], after["cache_hits"])
		}
		for _, p := range pk {
			if p.SrcIP == addr(resolverA) {
				t.Errorf("dns-a asked upstream during a cached answer: %v → %v", p.SrcIP, p.DstIP)
			}
		}
		// The GSLB's answer lives 5 s, the shop's CNAME 60 s: once the A
		// records expire, only the GSLB is asked again.
		var left uint32 = 5
		for _, s := range res.Trace.Steps {
			if s.Type == "A" {
				left = s.TTL
			}
		}
		time.Sleep(time.Duration(left+1) * time.Second)
		res = query(t, lab, "ue1", resolverA, shopName, mdns.TypeA, dns.QueryOptions{Trace: true})
		var asked []string
		for _, s := range res.Trace.Steps {
			if !s.Cache {
				asked = append(asked, who[addr(s.Server)])
			}
		}
		if !slices.Equal(asked, []string{"gslb"}) || !sameAddrs(addrsOf(res.Msg), eastVIPs) {
			t.Errorf("after the TTL: asked %v, got %v; want only gslb asked again, east", asked, addrsOf(res.Msg))
		}
		if d := stats(t, lab, "ue1", resolverA)["upstream_queries"] - after["upstream_queries"]; d < 1 {
			t.Errorf("upstream_queries grew by %d after the TTL", d)
		}
	})

	t.Run("names that do not exist are cached as such", func(t *testing.T) {
		r1 := query(t, lab, "ue1", resolverA, "nope.shop.example", mdns.TypeA, dns.QueryOptions{Trace: true})
		r2 := query(t, lab, "ue1", resolverA, "nope.shop.example", mdns.TypeA, dns.QueryOptions{Trace: true})
		if r1.Msg.Rcode != mdns.RcodeNameError || r2.Msg.Rcode != mdns.RcodeNameError {
			t.Fatalf("rcodes %s, %s; want NXDOMAIN", mdns.RcodeToString[r1.Msg.Rcode], mdns.RcodeToString[r2.Msg.Rcode])
		}
		if len(r2.Msg.Ns) == 0 || r2.Msg.Ns[0].Header().Rrtype != mdns.TypeSOA {
			t.Errorf("NXDOMAIN without the zone's SOA: %v", r2.Msg.Ns)
		}
		if r1.Trace.Cached || !r2.Trace.Cached {
			t.Errorf("first NXDOMAIN cached=%v, second cached=%v; want false, true", r1.Trace.Cached, r2.Trace.Cached)
		}
	})

	t.Run("static names go through the CDN's domain", func(t *testing.T) {
		a := labctlDig(t, lab, "ue1", "static.shop.example")
		if !slices.Equal(a.Addresses, []string{"203.0.113.10"}) || !strings.Contains(strings.Join(a.Answer, "\n"), "static.shop.example.cdn.test.") {
			t.Errorf("static.shop.example: %v", a.Answer)
		}
	})

	t.Run("the GSLB fails over when a region's load balancers go down", func(t *testing.T) {
		linkSet := func(dir string) {
			for _, n := range []string{"east1", "east2", "east3"} {
				if out, err := exec.Command(labctlBin, "link", dir, "--lab", lab, "dc", n).CombinedOutput(); err != nil {
					t.Fatalf("link %s dc %s: %v\n%s", dir, n, err, out)
				}
			}
		}
		resolvesTo := func(node string, vips []string) func() bool {
			return func() bool {
				r := query(t, lab, node, resolverA, shopName, mdns.TypeA, dns.QueryOptions{})
				return sameAddrs(addrsOf(r.Msg), vips)
			}
		}
		linkSet("down")
		took := labtest.WaitFor(t, 30*time.Second, resolvesTo("ue1", northVIPs), "ue1 resolving to north")
		t.Logf("region east down: ue1 resolved to north %s later (check every 1s, fall 2, TTL 5s)", took)
		if a := httpdns(t, lab, "ue1", shopName); !sameAddrs(a.IPs, northVIPs) {
			t.Errorf("HTTPDNS while east is down: %v, want north", a.IPs)
		}
		if st := stats(t, lab, "ue1", gslbNS); st["gslb_up_east"] != 0 || st["gslb_up_north"] != 3 {
			t.Errorf("gslb counters while east is down: up east %d, north %d", st["gslb_up_east"], st["gslb_up_north"])
		}
		linkSet("up")
		took = labtest.WaitFor(t, 30*time.Second, resolvesTo("ue1", eastVIPs), "ue1 resolving to east again")
		t.Logf("region east back: ue1 resolved to east %s later", took)
	})

	t.Run("malformed, hostile and unknown queries get proper answers", func(t *testing.T) {
		rcode := func(m *mdns.Msg) string {
			if m == nil {
				return "no reply"
			}
			return mdns.RcodeToString[m.Rcode]
		}
		for _, c := range []struct {
			what, server string
			pkt          []byte
			want         string
		}{
			{"a header promising a question that is not there", shopNS, header(1, 0, 1), "FORMERR"},
			{"a 64-byte label", shopNS, append(header(2, 0, 1), question(mdns.TypeA, strings.Repeat("a", 64), "shop", "example")...), "FORMERR"},
			{"a name longer than 255 bytes", shopNS, append(header(3, 0, 1), question(mdns.TypeA, strings.Repeat("a", 60), strings.Repeat("b", 60), strings.Repeat("c", 60), strings.Repeat("d", 60), strings.Repeat("e", 20), "example")...), "FORMERR"},
			{"two questions", shopNS, append(append(header(4, 0, 2), question(mdns.TypeA, "www", "shop", "example")...), question(mdns.TypeA, "www", "shop", "example")...), "FORMERR"},
			{"an UPDATE", shopNS, append(header(5, 5<<11, 1), question(mdns.TypeSOA, "shop", "example")...), "NOTIMP"},
			{"a zone transfer", shopNS, append(header(6, 0, 1), question(mdns.TypeAXFR, "shop", "example")...), "REFUSED"},
			{"a name the server is not authoritative for", shopNS, append(header(7, 0, 1), question(mdns.TypeA, "www", "other", "test")...), "REFUSED"},
			{"an unknown type", shopNS, append(header(8, 0, 1), question(65280, "origin", "shop", "example")...), "NOERROR"},
			{"an unknown type, recursively", resolverA, append(header(9, 1<<8, 1), question(65280, "origin", "shop", "example")...), "NOERROR"},
		} {
			m := raw(t, lab, "ue1", c.server, c.pkt)
			if got := rcode(m); got != c.want {
				t.Errorf("%s to %s: %s, want %s", c.what, who[addr(c.server)], got, c.want)
			}
			if c.want == "NOERROR" && m != nil && len(m.Answer) != 0 {
				t.Errorf("%s: answered %v, want no records", c.what, m.Answer)
			}
		}
		// Garbage shorter than a header gets no answer (any answer could
		// be used to amplify), and the server goes on serving.
		if m := raw(t, lab, "ue1", shopNS, []byte{1, 2, 3}); m != nil {
			t.Errorf("3 bytes of garbage were answered: %v", m)
		}
		// A subscriber of carrier B may not use carrier A's resolver, nor
		// read its counters or empty its cache.
		if r := query(t, lab, "home1", resolverA, shopName, mdns.TypeA, dns.QueryOptions{}); r.Msg.Rcode != mdns.RcodeRefused {
			t.Errorf("home1 asking dns-a: %s, want REFUSED", mdns.RcodeToString[r.Msg.Rcode])
		}
		if r := query(t, lab, "home1", resolverA, dns.FlushName, mdns.TypeTXT, dns.QueryOptions{Class: mdns.ClassCHAOS, NoRD: true}); r.Msg.Rcode != mdns.RcodeRefused {
			t.Errorf("home1 flushing dns-a's cache: %s, want REFUSED", mdns.RcodeToString[r.Msg.Rcode])
		}
		if r := query(t, lab, "ue1", shopNS, "origin.shop.example", mdns.TypeA, dns.QueryOptions{NoRD: true}); !slices.Equal(addrsOf(r.Msg), []string{"203.0.113.10"}) || !r.Msg.Authoritative {
			t.Errorf("ns1 after the garbage: %v (aa=%v)", r.Msg.Answer, r.Msg.Authoritative)
		}
	})

	t.Run("labctl dig shows the chain", func(t *testing.T) {
		// Empty the cache first, so the text shows every server.
		var n int
		err := netns.Do(topology.Namespace(lab, "ue1"), func() error {
			var err error
			n, err = dns.FlushCache(ctx, resolverA)
			return err
		})
		if err != nil || n == 0 {
			t.Fatalf("flush dns-a: %d entries, %v", n, err)
		}
		out, err := exec.Command(labctlBin, "dig", "--lab", lab, "ue1", shopName).CombinedOutput()
		if err != nil {
			t.Fatalf("labctl dig: %v\n%s", err, out)
		}
		for _, want := range []string{"ue1 asks dns-a (198.51.100.18)", "root (198.51.100.162) for .", "tld (198.51.100.166) for example.",
			"ns1 (203.0.113.53) for shop.example.", "gslb (203.0.113.54) for gslb.shop.example.", "answer: NOERROR", "203.0.113.11"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("labctl dig output lacks %q:\n%s", want, out)
			}
		}
		again, _ := exec.Command(labctlBin, "dig", "--lab", lab, "ue1", shopName).CombinedOutput()
		if !strings.Contains(string(again), "answered from its cache") {
			t.Errorf("second labctl dig does not say the cache answered:\n%s", again)
		}
		t.Logf("labctl dig ue1 %s:\n%s", shopName, out)
	})

	*downed = true
	downClean(t, e, lab, "after the DNS test")
	if after := rootSnapshot(t); after != before {
		t.Errorf("the root namespace changed")
	}
}
