package dns

import (
	"context"
	"net"
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"
)

// FuzzHandle feeds the server front, in front of the sample zones, with
// any message that unpacks: a reply must carry the query's Id with QR
// set, and pack whole and truncated to 512 bytes.
func FuzzHandle(f *testing.F) {
	seed := func(m *mdns.Msg) {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(query("www.test.", mdns.TypeA))
	seed(query("big.shop.test.", mdns.TypeTXT))
	seed(query("multi.test.", mdns.TypeANY))
	seed(query("test.", mdns.TypeAXFR))
	seed(query("x.y.shop.test.", mdns.TypeNS))
	chaos := query(StatsName, mdns.TypeTXT)
	chaos.Question[0].Qclass = mdns.ClassCHAOS
	seed(chaos)
	flush := query(FlushName, mdns.TypeTXT)
	flush.Question[0].Qclass = mdns.ClassCHAOS
	seed(flush)
	ecs := query("www.gslb.shop.test.", mdns.TypeA)
	ecs.SetEdns0(4096, false)
	ecs.IsEdns0().Option = append(ecs.IsEdns0().Option,
		&mdns.EDNS0_SUBNET{Code: mdns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(10, 1, 2, 0)})
	seed(ecs)
	edns := query("www.shop.test.", mdns.TypeA)
	edns.SetEdns0(1232, true)
	edns.IsEdns0().Option = append(edns.IsEdns0().Option, &mdns.EDNS0_LOCAL{Code: TraceOption})
	seed(edns)
	badvers := query("host.test.", mdns.TypeA)
	badvers.SetEdns0(1232, false)
	badvers.IsEdns0().SetVersion(1)
	seed(badvers)
	notify := query("test.", mdns.TypeSOA)
	notify.Opcode = mdns.OpcodeNotify
	seed(notify)

	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	st := &Counters{}
	a, err := newAuthority(ctx, sampleZones(), st, nil, newFakeNet().dial)
	if err != nil {
		f.Fatal(err)
	}
	srv := NewServer(a, st, func() int { return 7 }, nil)

	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(mdns.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		client := netip.AddrFrom4([4]byte{10, byte(req.Id >> 8), byte(req.Id), 1})
		resp := srv.Handle(context.Background(), req, client)
		if resp == nil {
			if !req.Response {
				t.Fatalf("no reply to a query: %v", req)
			}
			return
		}
		if req.Response {
			t.Fatalf("a reply to a response")
		}
		if resp.Id != req.Id || !resp.Response {
			t.Fatalf("reply header %v to %v", resp.MsgHdr, req.MsgHdr)
		}
		resp.Compress = true
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("reply does not pack: %v\n%v", err, resp)
		}
		resp.Truncate(mdns.MinMsgSize)
		p, err := resp.Pack()
		if err != nil {
			t.Fatalf("truncated reply does not pack: %v\n%v", err, resp)
		}
		if len(p) > mdns.MinMsgSize {
			t.Fatalf("truncated reply of %d bytes", len(p))
		}
	})
}
