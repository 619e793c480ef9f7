package dns

import (
	"errors"
	"fmt"
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

// Limits on a name to resolve (RFC 1035 section 2.3.4), in octets: one
// label, and the whole name in presentation format without its final dot.
const (
	maxLabel = 63
	maxName  = 253
)

// CheckName says what is wrong with a name in presentation format: a NUL
// or another control byte (raw, or escaped as \DDD), a malformed escape,
// an empty label, a label over 63 octets (escapes decoded), or more than
// 253 octets in all. The root, ".", is a name.
func CheckName(name string) error {
	for i := 0; i < len(name); i++ {
		if err := controlByte(name[i], fmt.Sprintf("at offset %d", i)); err != nil {
			return err
		}
	}
	if name == "." {
		return nil
	}
	// size is the name's length in octets, escapes decoded, without the
	// final dot: its labels and the dots between them.
	size := 0
	label, octets := 1, 0 // the label being read and its octets so far
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '.':
			if err := checkLabel(label, octets); err != nil {
				return err
			}
			if i == len(name)-1 { // the final dot of a fully qualified name
				octets = -1
				continue
			}
			label, octets, size = label+1, 0, size+1
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
		octets, size = octets+1, size+1
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

// QuoteName is name quoted for an error message, its control bytes
// escaped and cut after 80 bytes.
func QuoteName(name string) string {
	const show = 80
	if len(name) > show {
		return strconv.QuoteToASCII(name[:show]) + fmt.Sprintf("… (%d bytes)", len(name))
	}
	return strconv.QuoteToASCII(name)
}
