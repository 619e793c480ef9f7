package dns

import (
	"strconv"

	mdns "github.com/miekg/dns"
)

// RcodeName is an rcode's mnemonic, RCODEnnn for unknown ones. 16 is
// BADVERS (RFC 6891), never BADSIG: the lab does no TSIG, so the rcode
// can only mean a bad EDNS version.
func RcodeName(rc int) string {
	if rc == mdns.RcodeBadVers {
		return "BADVERS"
	}
	if s, ok := mdns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rc)
}

// MetaType reports whether t is a qtype the server front turns away
// rather than answers: zone transfers (AXFR, IXFR: REFUSED) and types that
// are not questions (0, OPT, and the meta range 128 to TSIG, TKEY
// included: FORMERR). ANY, MAILA and MAILB are not meta types here.
func MetaType(t uint16) bool {
	return t == mdns.TypeAXFR || t == mdns.TypeIXFR ||
		t == mdns.TypeNone || t == mdns.TypeOPT || (t >= 128 && t <= mdns.TypeTSIG)
}
