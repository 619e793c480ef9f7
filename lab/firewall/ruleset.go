package firewall

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Table is the nftables table the part owns in a firewall's namespace
// (family inet: IPv4 and IPv6 alike, so what no rule allows is dropped
// whatever its family).
const Table = "labctl"

// Counter names of the rules the part adds around the allow rules.
const (
	Established = "established"
	Invalid     = "invalid"
	Inside      = "inside"
	Dropped     = "dropped"
)

// Ruleset is the whole nft script for one firewall: the table replaced in
// one transaction (created first so the delete always has a target), its
// comment carrying the script's hash, which Observe reads back.
func Ruleset(lab string, fw *Firewall) (script, hash string) {
	body := rules(fw)
	h := sha256.Sum256([]byte(body))
	hash = hex.EncodeToString(h[:8])
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", Table, Table)
	fmt.Fprintf(&b, "table inet %s {\n\tcomment %q\n", Table, comment(lab, hash))
	b.WriteString(body)
	b.WriteString("}\n")
	return b.String(), hash
}

// comment is the table comment: the lab and the hash of its rules.
func comment(lab, hash string) string { return "labctl " + lab + " " + hash }

// hashOf reads the hash back from a table comment of lab ("" if the
// comment is not the lab's).
func hashOf(lab, c string) string {
	h, ok := strings.CutPrefix(c, "labctl "+lab+" ")
	if !ok || strings.Contains(h, " ") {
		return ""
	}
	return h
}

// rules is the forward chain: stateful, policy drop, every rule counted.
func rules(fw *Firewall) string {
	var b strings.Builder
	b.WriteString("\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n")
	line := func(match, verdict, name string) {
		fmt.Fprintf(&b, "\t\t%scounter %s comment %q\n", match, verdict, name)
	}
	line("ct state established,related ", "accept", Established)
	line("ct state invalid ", "drop", Invalid)
	line("iifname "+set(quoted(fw.Inside))+" ", "accept", Inside)
	for i, r := range fw.Allow {
		line(match(r), "accept", r.label(i))
	}
	line("", "drop", Dropped)
	b.WriteString("\t}\n")
	return b.String()
}

// match is an allow rule's nft match, each part followed by a space.
func match(r *Rule) string {
	var b strings.Builder
	b.WriteString("ct state new ")
	if len(r.From) > 0 {
		b.WriteString("ip saddr " + set(r.From) + " ")
	}
	if len(r.To) > 0 {
		b.WriteString("ip daddr " + set(r.To) + " ")
	}
	switch {
	case len(r.Ports) > 0:
		ports := make([]string, len(r.Ports))
		for i, p := range r.Ports {
			ports[i] = strconv.Itoa(p)
		}
		b.WriteString(r.Proto + " dport " + set(ports) + " ")
	case r.Proto != "":
		b.WriteString("meta l4proto " + r.Proto + " ")
	case len(r.From) == 0 && len(r.To) == 0:
		b.WriteString("meta nfproto ipv4 ") // "allow everything IPv4": still a match
	}
	return b.String()
}

func set(items []string) string {
	if len(items) == 1 {
		return items[0]
	}
	return "{ " + strings.Join(items, ", ") + " }"
}

func quoted(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}
