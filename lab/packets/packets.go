// Package packets decodes pcap files written by tcpdump into small,
// comparable summaries, so tests (and `labctl trace`) can assert on what
// actually crossed a link instead of grepping tcpdump's text output.
//
// Decoding uses gopacket's pure-Go layers and pcapgo packages, so no
// libpcap or cgo is needed to read a capture.
package packets

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Packet is one captured frame, summarised outer to inner.
type Packet struct {
	Time             time.Time  // capture timestamp (UTC, as stored in the file)
	SrcMAC, DstMAC   string     // outer Ethernet; for Linux SLL captures only SrcMAC is known
	SrcIP, DstIP     netip.Addr // outer IP, or ARP sender/target protocol addresses (zero if neither)
	Proto            string     // "icmp", "tcp", "udp", "arp", "icmpv6", ... of the outer IP payload
	SrcPort, DstPort uint16     // outer TCP/UDP
	Length           int        // captured length of this frame
	VXLAN            *VXLAN     // set when the outer UDP payload is VXLAN
}

// VXLAN is the overlay header of an encapsulated frame.
type VXLAN struct {
	VNI   uint32
	Inner Packet // the encapsulated Ethernet frame, decoded the same way (Inner.VXLAN is nil unless nested)
}

// linkTypes are the capture link types Read accepts. Ethernet is what
// tcpdump writes for a veth/bridge; SLL and SLL2 are what `-i any` writes
// (SLL2 since libpcap 1.10); Raw covers L3 devices such as tun.
var linkTypes = map[layers.LinkType]bool{
	layers.LinkTypeEthernet:  true,
	layers.LinkTypeLinuxSLL:  true,
	layers.LinkTypeLinuxSLL2: true,
	layers.LinkTypeRaw:       true,
	layers.LinkTypeIPv4:      true,
	layers.LinkTypeIPv6:      true,
}

// Read decodes every packet of a pcap file.
//
// Frames whose contents do not decode fully are still returned with
// whatever was understood, because real captures contain odd frames and
// an assertion usually cares about the others. Damage to the file itself
// (bad header, a record cut short) is an error; the packets read before
// the damage are returned alongside it, since a capture killed mid-write
// is still worth inspecting.
func Read(path string) ([]Packet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()

	r, err := pcapgo.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: not a pcap file: %w", path, err)
	}
	lt := r.LinkType()
	if !linkTypes[lt] {
		return nil, fmt.Errorf("%s: unsupported link type %v (%d)", path, lt, int(lt))
	}

	var out []Packet
	for {
		data, ci, err := r.ReadPacketData()
		// A clean end is EOF before any record header byte (ci then
		// stays zero). pcapgo also reports plain EOF when a header
		// promises data but none follows; that is a cut-off file.
		if errors.Is(err, io.EOF) && ci.CaptureLength == 0 {
			return out, nil
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return out, fmt.Errorf("%s: packet %d: %w", path, len(out)+1, err)
		}
		// NoCopy: data is freshly allocated per record and not kept.
		pkt := gopacket.NewPacket(data, lt, gopacket.NoCopy)
		p := Packet{Time: ci.Timestamp, Length: ci.CaptureLength}
		summarise(pkt.Layers(), &p)
		out = append(out, p)
	}
}

// summarise fills p from decoded layers, outermost first. Only the first
// link, network and transport layers count, so the payload of an ICMP
// error or an IP-in-IP tunnel cannot overwrite the outer addresses. On
// VXLAN the remaining layers are the inner frame, summarised recursively.
func summarise(ls []gopacket.Layer, p *Packet) {
	var (
		seenLink, seenNet, seenL4 bool
		netIdx                    = -1 // index of the outer IP layer or its last IPv6 extension header
		etherType                 layers.EthernetType
	)
	for i, l := range ls {
		// IPv6 extension headers sit between the IP header and the real
		// payload; follow their chain so Proto names the payload.
		if netIdx >= 0 && i == netIdx+1 {
			if nh, ok := extNextHeader(l); ok {
				p.Proto = protoName(nh)
				netIdx = i
				continue
			}
		}
		switch l := l.(type) {
		case *layers.Ethernet:
			if !seenLink {
				seenLink = true
				p.SrcMAC, p.DstMAC = l.SrcMAC.String(), l.DstMAC.String()
				etherType = l.EthernetType
			}
		case *layers.LinuxSLL:
			if !seenLink {
				seenLink = true
				p.SrcMAC = macString(l.Addr)
				etherType = l.EthernetType
			}
		case *layers.LinuxSLL2:
			if !seenLink {
				seenLink = true
				p.SrcMAC = macString(l.Addr)
				etherType = l.ProtocolType
			}
		case *layers.ARP:
			if !seenNet {
				seenNet = true
				p.Proto = "arp"
				// Sender/target protocol addresses show which tenant's
				// ARP ended up where (e.g. leaked into another VNI).
				p.SrcIP, _ = netip.AddrFromSlice(l.SourceProtAddress)
				p.DstIP, _ = netip.AddrFromSlice(l.DstProtAddress)
			}
		case *layers.IPv4:
			if !seenNet {
				seenNet, netIdx = true, i
				p.SrcIP, _ = netip.AddrFromSlice(l.SrcIP.To4())
				p.DstIP, _ = netip.AddrFromSlice(l.DstIP.To4())
				p.Proto = protoName(l.Protocol)
			}
		case *layers.IPv6:
			if !seenNet {
				seenNet, netIdx = true, i
				p.SrcIP, _ = netip.AddrFromSlice(l.SrcIP.To16())
				p.DstIP, _ = netip.AddrFromSlice(l.DstIP.To16())
				p.Proto = protoName(l.NextHeader)
			}
		case *layers.TCP:
			if seenNet && !seenL4 && p.Proto == "tcp" {
				seenL4 = true
				p.SrcPort, p.DstPort = uint16(l.SrcPort), uint16(l.DstPort)
			}
		case *layers.UDP:
			if seenNet && !seenL4 && p.Proto == "udp" {
				seenL4 = true
				p.SrcPort, p.DstPort = uint16(l.SrcPort), uint16(l.DstPort)
			}
		case *layers.VXLAN:
			// gopacket only decodes VXLAN on a recognised UDP port
			// (4789); requiring our outer UDP keeps VXLAN quoted
			// inside an ICMP error from being taken as the overlay.
			if seenL4 && p.Proto == "udp" {
				inner := Packet{Time: p.Time, Length: len(l.Payload)}
				summarise(ls[i+1:], &inner)
				p.VXLAN = &VXLAN{VNI: l.VNI, Inner: inner}
				return
			}
		}
	}
	// Non-IP, non-ARP frames (LLDP, STP, ...) still get a Proto so a
	// summary line says what they were.
	if p.Proto == "" && seenLink {
		p.Proto = strings.ToLower(etherType.String())
		if etherType == layers.EthernetTypeLLC {
			p.Proto = "llc"
		} else if p.Proto == "unknownethernettype" {
			p.Proto = fmt.Sprintf("ethertype-0x%04x", uint16(etherType))
		}
	}
}

// extNextHeader reports the NextHeader of an IPv6 extension header layer.
func extNextHeader(l gopacket.Layer) (layers.IPProtocol, bool) {
	switch l := l.(type) {
	case *layers.IPv6HopByHop:
		return l.NextHeader, true
	case *layers.IPv6Routing:
		return l.NextHeader, true
	case *layers.IPv6Destination:
		return l.NextHeader, true
	case *layers.IPv6Fragment:
		return l.NextHeader, true
	}
	return 0, false
}

// protoName gives tcpdump-style lowercase names ("icmp", not gopacket's
// "ICMPv4") and a numeric fallback for protocols gopacket does not know.
func protoName(p layers.IPProtocol) string {
	switch p {
	case layers.IPProtocolICMPv4:
		return "icmp"
	}
	if s := p.String(); s != "UnknownIPProtocol" {
		return strings.ToLower(s)
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// macString renders a link address only when it is an Ethernet MAC; SLL
// records other address kinds too (e.g. none at all on tun devices).
func macString(a net.HardwareAddr) string {
	if len(a) != 6 {
		return ""
	}
	return a.String()
}

// String renders one line like tcpdump:
//
//	10:00:00.000001 172.16.1.11 > 172.16.2.11 udp 4789 vxlan vni 1001 [10.10.1.10 > 10.10.2.10 tcp 43210 > 8080]
//
// The time is printed in p.Time's location (UTC for packets from Read).
func (p Packet) String() string {
	if p.Time.IsZero() {
		return p.summary()
	}
	return p.Time.Format("15:04:05.000000") + " " + p.summary()
}

// summary is String without the timestamp, so an inner frame can be
// rendered inside its outer one.
func (p Packet) summary() string {
	var parts []string
	switch {
	case p.SrcIP.IsValid() || p.DstIP.IsValid():
		parts = append(parts, addrString(p.SrcIP), ">", addrString(p.DstIP))
	case p.SrcMAC != "" || p.DstMAC != "":
		parts = append(parts, orDash(p.SrcMAC), ">", orDash(p.DstMAC))
	}
	if p.Proto != "" {
		parts = append(parts, p.Proto)
	}
	switch {
	case p.VXLAN != nil:
		// The outer source port is a flow hash and only noise here.
		parts = append(parts, fmt.Sprint(p.DstPort), "vxlan", "vni", fmt.Sprint(p.VXLAN.VNI),
			"["+p.VXLAN.Inner.summary()+"]")
	case p.Proto == "tcp" || p.Proto == "udp":
		parts = append(parts, fmt.Sprint(p.SrcPort), ">", fmt.Sprint(p.DstPort))
	}
	return strings.Join(parts, " ")
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
