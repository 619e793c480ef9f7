package packets

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"labctl/lab/internal/labtest"
)

var (
	t0 = time.Date(2024, 5, 1, 10, 0, 0, 1000, time.UTC) // prints as 10:00:00.000001

	macOuterA = mustMAC("02:00:00:00:01:01")
	macOuterB = mustMAC("02:00:00:00:02:01")
	macInnerA = mustMAC("02:00:00:0a:01:0a")
	macInnerB = mustMAC("02:00:00:0a:02:0a")
	macV6A    = mustMAC("02:00:00:00:06:01")
	macV6B    = mustMAC("33:33:00:00:00:01")
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// frame serialises layers the way a kernel would put them on the wire:
// lengths and checksums filled in.
func frame(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// writePcap writes frames one microsecond apart starting at t0.
func writePcap(t *testing.T, lt layers.LinkType, frames ...[]byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "capture.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65536, lt); err != nil {
		t.Fatal(err)
	}
	for i, data := range frames {
		ci := gopacket.CaptureInfo{
			Timestamp:     t0.Add(time.Duration(i) * time.Microsecond),
			CaptureLength: len(data),
			Length:        len(data),
		}
		if err := w.WritePacket(ci, data); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func ip4(s string) net.IP { return net.ParseIP(s).To4() }

func tcpFrame(t *testing.T) []byte {
	eth := &layers.Ethernet{SrcMAC: macInnerA, DstMAC: macInnerB, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: ip4("10.10.1.10"), DstIP: ip4("10.10.2.10")}
	tcp := &layers.TCP{SrcPort: 43210, DstPort: 8080, SYN: true, Seq: 1, Window: 64240}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return frame(t, eth, ip, tcp)
}

// vxlanFrame wraps inner in Ethernet/IPv4/UDP(4789)/VXLAN.
func vxlanFrame(t *testing.T, vni uint32, inner ...gopacket.SerializableLayer) []byte {
	eth := &layers.Ethernet{SrcMAC: macOuterA, DstMAC: macOuterB, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: ip4("172.16.1.11"), DstIP: ip4("172.16.2.11")}
	udp := &layers.UDP{SrcPort: 51000, DstPort: 4789}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	vx := &layers.VXLAN{ValidIDFlag: true, VNI: vni}
	return frame(t, append([]gopacket.SerializableLayer{eth, ip, udp, vx}, inner...)...)
}

func vxlanTCPFrame(t *testing.T) []byte {
	eth := &layers.Ethernet{SrcMAC: macInnerA, DstMAC: macInnerB, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: ip4("10.10.1.10"), DstIP: ip4("10.10.2.10")}
	tcp := &layers.TCP{SrcPort: 43210, DstPort: 8080, SYN: true, Seq: 1, Window: 64240}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	return vxlanFrame(t, 1001, eth, ip, tcp)
}

func vxlanARPFrame(t *testing.T) []byte {
	eth := &layers.Ethernet{SrcMAC: macInnerA, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
		SourceHwAddress: macInnerA, SourceProtAddress: ip4("10.20.1.10"),
		DstHwAddress: make([]byte, 6), DstProtAddress: ip4("10.20.1.1"),
	}
	return vxlanFrame(t, 2002, eth, arp)
}

func icmp6Frame(t *testing.T) []byte {
	eth := &layers.Ethernet{SrcMAC: macV6A, DstMAC: macV6B, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6,
		SrcIP: net.ParseIP("fd00:10::1"), DstIP: net.ParseIP("fd00:10::2")}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	echo := &layers.ICMPv6Echo{Identifier: 7, SeqNumber: 1}
	return frame(t, eth, ip, icmp, echo, gopacket.Payload("ping"))
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestReadDecodesFrames(t *testing.T) {
	frames := [][]byte{tcpFrame(t), vxlanTCPFrame(t), vxlanARPFrame(t), icmp6Frame(t)}
	path := writePcap(t, layers.LinkTypeEthernet, frames...)

	got, err := Read(path)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	// Outer headers of a VXLAN frame: Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
	const vxlanOverhead = 50
	want := []Packet{
		{
			Time:   t0,
			SrcMAC: macInnerA.String(), DstMAC: macInnerB.String(),
			SrcIP: addr("10.10.1.10"), DstIP: addr("10.10.2.10"),
			Proto: "tcp", SrcPort: 43210, DstPort: 8080,
			Length: len(frames[0]),
		},
		{
			Time:   t0.Add(time.Microsecond),
			SrcMAC: macOuterA.String(), DstMAC: macOuterB.String(),
			SrcIP: addr("172.16.1.11"), DstIP: addr("172.16.2.11"),
			Proto: "udp", SrcPort: 51000, DstPort: 4789,
			Length: len(frames[1]),
			VXLAN: &VXLAN{VNI: 1001, Inner: Packet{
				Time:   t0.Add(time.Microsecond),
				SrcMAC: macInnerA.String(), DstMAC: macInnerB.String(),
				SrcIP: addr("10.10.1.10"), DstIP: addr("10.10.2.10"),
				Proto: "tcp", SrcPort: 43210, DstPort: 8080,
				Length: len(frames[1]) - vxlanOverhead,
			}},
		},
		{
			Time:   t0.Add(2 * time.Microsecond),
			SrcMAC: macOuterA.String(), DstMAC: macOuterB.String(),
			SrcIP: addr("172.16.1.11"), DstIP: addr("172.16.2.11"),
			Proto: "udp", SrcPort: 51000, DstPort: 4789,
			Length: len(frames[2]),
			VXLAN: &VXLAN{VNI: 2002, Inner: Packet{
				Time:   t0.Add(2 * time.Microsecond),
				SrcMAC: macInnerA.String(), DstMAC: "ff:ff:ff:ff:ff:ff",
				SrcIP: addr("10.20.1.10"), DstIP: addr("10.20.1.1"),
				Proto:  "arp",
				Length: len(frames[2]) - vxlanOverhead,
			}},
		},
		{
			Time:   t0.Add(3 * time.Microsecond),
			SrcMAC: macV6A.String(), DstMAC: macV6B.String(),
			SrcIP: addr("fd00:10::1"), DstIP: addr("fd00:10::2"),
			Proto:  "icmpv6",
			Length: len(frames[3]),
		},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d packets, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		comparePacket(t, strconv.Itoa(i), got[i], want[i])
	}

	wantLines := []string{
		"10:00:00.000001 10.10.1.10 > 10.10.2.10 tcp 43210 > 8080",
		"10:00:00.000002 172.16.1.11 > 172.16.2.11 udp 4789 vxlan vni 1001 [10.10.1.10 > 10.10.2.10 tcp 43210 > 8080]",
		"10:00:00.000003 172.16.1.11 > 172.16.2.11 udp 4789 vxlan vni 2002 [10.20.1.10 > 10.20.1.1 arp]",
		"10:00:00.000004 fd00:10::1 > fd00:10::2 icmpv6",
	}
	for i, w := range wantLines {
		if s := got[i].String(); s != w {
			t.Errorf("packet %d String:\n got %q\nwant %q", i, s, w)
		}
	}
}

// comparePacket checks every field, recursing into VXLAN, so a failure
// names the field rather than dumping two structs.
func comparePacket(t *testing.T, name string, got, want Packet) {
	t.Helper()
	check := func(field string, g, w any) {
		t.Helper()
		if g != w {
			t.Errorf("%s.%s = %v, want %v", name, field, g, w)
		}
	}
	check("Time", got.Time.UnixNano(), want.Time.UnixNano())
	check("SrcMAC", got.SrcMAC, want.SrcMAC)
	check("DstMAC", got.DstMAC, want.DstMAC)
	check("SrcIP", got.SrcIP, want.SrcIP)
	check("DstIP", got.DstIP, want.DstIP)
	check("Proto", got.Proto, want.Proto)
	check("SrcPort", got.SrcPort, want.SrcPort)
	check("DstPort", got.DstPort, want.DstPort)
	check("Length", got.Length, want.Length)
	switch {
	case got.VXLAN == nil && want.VXLAN == nil:
	case got.VXLAN == nil || want.VXLAN == nil:
		t.Errorf("%s.VXLAN = %v, want %v", name, got.VXLAN, want.VXLAN)
	default:
		check("VXLAN.VNI", got.VXLAN.VNI, want.VXLAN.VNI)
		comparePacket(t, name+".VXLAN.Inner", got.VXLAN.Inner, want.VXLAN.Inner)
	}
}

// TestReadLinuxSLL covers `tcpdump -i any` captures, which carry a
// 16-byte cooked header instead of Ethernet.
func TestReadLinuxSLL(t *testing.T) {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: ip4("192.0.2.1"), DstIP: ip4("192.0.2.2")}
	udp := &layers.UDP{SrcPort: 5353, DstPort: 53}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	l3 := frame(t, ip, udp, gopacket.Payload("q"))
	sll := make([]byte, 16)
	binary.BigEndian.PutUint16(sll[0:], 4) // outgoing
	binary.BigEndian.PutUint16(sll[2:], 1) // ARPHRD_ETHER
	binary.BigEndian.PutUint16(sll[4:], 6)
	copy(sll[6:], macOuterA)
	binary.BigEndian.PutUint16(sll[14:], uint16(layers.EthernetTypeIPv4))
	data := append(sll, l3...)

	got, err := Read(writePcap(t, layers.LinkTypeLinuxSLL, data))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(got) != 1 {
		t.Fatalf("got %d packets, want 1", len(got))
	}
	comparePacket(t, "sll", got[0], Packet{
		Time:   t0,
		SrcMAC: macOuterA.String(),
		SrcIP:  addr("192.0.2.1"), DstIP: addr("192.0.2.2"),
		Proto: "udp", SrcPort: 5353, DstPort: 53,
		Length: len(data),
	})
}

func TestReadBadFiles(t *testing.T) {
	dir := t.TempDir()
	good := writePcap(t, layers.LinkTypeEthernet, tcpFrame(t), vxlanTCPFrame(t))
	goodBytes, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}

	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("missing", func(t *testing.T) {
		if _, err := Read(filepath.Join(dir, "nope.pcap")); err == nil {
			t.Fatal("want error for missing file")
		}
	})
	t.Run("empty", func(t *testing.T) {
		if _, err := Read(write("empty.pcap", nil)); err == nil {
			t.Fatal("want error for empty file")
		}
	})
	t.Run("garbage", func(t *testing.T) {
		b := []byte(strings.Repeat("this is not a pcap file\n", 20))
		if _, err := Read(write("garbage.pcap", b)); err == nil {
			t.Fatal("want error for garbage file")
		}
	})
	t.Run("truncated header", func(t *testing.T) {
		if _, err := Read(write("hdr.pcap", goodBytes[:10])); err == nil {
			t.Fatal("want error for truncated header")
		}
	})
	t.Run("truncated record", func(t *testing.T) {
		// Cut the second packet short: the first is still returned.
		got, err := Read(write("cut.pcap", goodBytes[:len(goodBytes)-5]))
		if err == nil {
			t.Fatal("want error for truncated record")
		}
		if len(got) != 1 || got[0].Proto != "tcp" {
			t.Fatalf("want the intact first packet back, got %v", got)
		}
	})
	t.Run("every truncation", func(t *testing.T) {
		// No prefix of a valid file may panic, and only those ending
		// on a record boundary (24-byte file header, 16-byte record
		// headers) are error-free.
		clean := map[int]bool{24: true, 24 + 16 + len(tcpFrame(t)): true}
		for n := 0; n < len(goodBytes); n++ {
			p := write("prefix.pcap", goodBytes[:n])
			if _, err := Read(p); (err == nil) != clean[n] {
				t.Errorf("prefix %d/%d: err = %v", n, len(goodBytes), err)
			}
		}
	})
	t.Run("garbage frames", func(t *testing.T) {
		// A valid file whose frames are nonsense decodes without error or panic.
		junk := [][]byte{{0xff}, []byte(strings.Repeat("\x00", 14)), []byte(strings.Repeat("\xa5", 200))}
		// An Ethernet/IPv4 header claiming UDP 4789 but with a cut-off VXLAN header.
		vx := vxlanTCPFrame(t)
		junk = append(junk, vx[:14+20+8+3])
		got, err := Read(writePcap(t, layers.LinkTypeEthernet, junk...))
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if len(got) != len(junk) {
			t.Fatalf("got %d packets, want %d", len(got), len(junk))
		}
		for _, p := range got {
			_ = p.String()
		}
	})
	t.Run("unsupported link type", func(t *testing.T) {
		if _, err := Read(writePcap(t, layers.LinkTypeIEEE802_11, tcpFrame(t))); err == nil {
			t.Fatal("want error for 802.11 capture")
		}
	})
}

// TestLiveCapture checks Read against a real tcpdump capture of a ping
// across a veth between two namespaces. It needs root and tcpdump.
func TestLiveCapture(t *testing.T) {
	labtest.NeedRoot(t, "needs root to create network namespaces")
	for _, tool := range []string{"ip", "tcpdump", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found", tool)
		}
	}
	run := func(name string, args ...string) error {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return &cmdError{cmd: name + " " + strings.Join(args, " "), out: string(out), err: err}
		}
		return nil
	}
	// The PID suffix keeps parallel runs from colliding.
	suffix := strconv.Itoa(os.Getpid())
	nsA, nsB := "pk-test-a-"+suffix, "pk-test-b-"+suffix
	if err := run("ip", "netns", "add", nsA); err != nil {
		t.Skipf("cannot create network namespaces here: %v", err)
	}
	t.Cleanup(func() { _ = run("ip", "netns", "del", nsA) })
	if err := run("ip", "netns", "add", nsB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = run("ip", "netns", "del", nsB) })

	const ipA, ipB = "10.255.77.1", "10.255.77.2"
	for _, args := range [][]string{
		{"-n", nsA, "link", "add", "pk0", "type", "veth", "peer", "name", "pk1", "netns", nsB},
		{"-n", nsA, "addr", "add", ipA + "/30", "dev", "pk0"},
		{"-n", nsB, "addr", "add", ipB + "/30", "dev", "pk1"},
		{"-n", nsA, "link", "set", "pk0", "up"},
		{"-n", nsB, "link", "set", "pk1", "up"},
	} {
		if err := run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	macA, macB := linkMAC(t, nsA, "pk0"), linkMAC(t, nsB, "pk1")

	// .pcap suffix: distro AppArmor profiles let tcpdump write only such
	// names. -Z root: otherwise tcpdump drops to a user that cannot write
	// into the root-owned temp dir. The icmp filter keeps IPv6 ND/MLD
	// chatter on link-up from using up the -c count.
	file := filepath.Join(t.TempDir(), "live.pcap")
	cmd := exec.Command("ip", "netns", "exec", nsA,
		"tcpdump", "-i", "pk0", "-n", "-U", "--immediate-mode", "-Z", "root",
		"-w", file, "-c", "4", "icmp")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// `ip netns exec` execs tcpdump in place, so this PID is tcpdump's.
	exited := make(chan error, 1)
	listening := make(chan struct{})
	var tail strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "listening on") {
				close(listening)
				signalled = true
				continue
			}
			tail.WriteString(sc.Text() + "\n")
		}
		exited <- cmd.Wait()
	}()
	waited := false // set once exited has been received; read only here
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	select {
	case <-listening:
	case err := <-exited:
		waited = true
		t.Fatalf("tcpdump exited before listening: %v\n%s", err, tail.String())
	case <-time.After(10 * time.Second):
		t.Fatal("tcpdump did not start listening within 10s")
	}

	if err := run("ip", "netns", "exec", nsA, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", ipB); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		waited = true
		if err != nil {
			t.Fatalf("tcpdump: %v\n%s", err, tail.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tcpdump did not capture 4 packets within 10s")
	}

	pkts, err := Read(file)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(pkts) != 4 {
		t.Fatalf("got %d packets, want 4: %v", len(pkts), pkts)
	}
	var requests, replies int
	for _, p := range pkts {
		t.Log(p)
		if p.Proto != "icmp" || p.VXLAN != nil || p.Length < 14+20+8 {
			t.Errorf("unexpected packet %+v", p)
			continue
		}
		switch {
		case p.SrcIP == addr(ipA) && p.DstIP == addr(ipB) && p.SrcMAC == macA && p.DstMAC == macB:
			requests++
		case p.SrcIP == addr(ipB) && p.DstIP == addr(ipA) && p.SrcMAC == macB && p.DstMAC == macA:
			replies++
		default:
			t.Errorf("packet with unexpected addresses: %+v", p)
		}
	}
	if requests != 2 || replies != 2 {
		t.Errorf("got %d echo requests and %d replies, want 2 and 2", requests, replies)
	}
}

// linkMAC returns an interface's MAC inside a namespace.
func linkMAC(t *testing.T, ns, dev string) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-br", "link", "show", "dev", dev).Output()
	if err != nil {
		t.Fatalf("ip -n %s link show %s: %v", ns, dev, err)
	}
	// "pk0@if2  UP  aa:bb:cc:dd:ee:ff <BROADCAST,...>"
	f := strings.Fields(string(out))
	if len(f) < 3 {
		t.Fatalf("unexpected ip -br output %q", out)
	}
	return f[2]
}

type cmdError struct {
	cmd, out string
	err      error
}

func (e *cmdError) Error() string {
	return e.cmd + ": " + e.err.Error() + ": " + strings.TrimSpace(e.out)
}
