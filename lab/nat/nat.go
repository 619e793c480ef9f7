// Package nat manages the iptables NAT rules of one namespace of a lab.
//
// Every rule labctl adds carries `-m comment --comment <mark>`, the lab's
// mark, so that labctl finds and deletes its own rules only: the host's
// rules and another lab's are never touched. The rules are added and read
// with the iptables binary (through go-iptables) run inside the namespace:
// the child process is forked from a thread that netns.Do has moved into
// the namespace, and inherits it, as CNI plugins do.
//
// Only IPv4 (iptables, not ip6tables) is handled.
//
// It is the only package of labctl that runs iptables: besides the nat
// rules it makes an interface drop everything (DropAll, for the silent
// link failure of bench bgp) and checks that iptables works (Probe, for
// doctor).
package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"

	"labctl/lab/netns"
)

// Table is the iptables table this package works on.
const Table = "nat"

// Rule is one iptables rule of the nat table: its chain and its match/target
// arguments without the comment (the comment is added from the mark).
//
// The canonical form of Args is the one `iptables -S` prints: addresses
// with their prefix length ("/32"), the address, interface and protocol
// options first (-s, -d, -i, -o, -p), the implicit "-m tcp"/"-m udp"
// spelled out before port options, then the other matches and the target.
type Rule struct {
	Chain string   `json:"chain"` // PREROUTING, POSTROUTING, OUTPUT
	Args  []string `json:"args"`  // e.g. ["-d","203.0.113.10/32","-j","DNAT","--to-destination","10.10.1.10"]
}

// String renders the rule as `iptables -t nat -A` takes it, without -A:
// "PREROUTING -d 203.0.113.10/32 -j DNAT --to-destination 10.10.1.10".
// Arguments that are empty or hold spaces or quotes are quoted.
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString(r.Chain)
	for _, a := range r.Args {
		b.WriteByte(' ')
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\") {
			a = strconv.Quote(a)
		}
		b.WriteString(a)
	}
	return b.String()
}

// Equal reports whether two rules are the same chain and arguments.
func (r Rule) Equal(o Rule) bool { return r.Chain == o.Chain && slices.Equal(r.Args, o.Args) }

func host(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// OneToOne returns the rules of a 1:1 translation (a "floating IP"):
// traffic to public goes to private (DNAT in PREROUTING and OUTPUT), and
// private's own outbound traffic leaves as public (SNAT in POSTROUTING).
// The rules come in table order.
func OneToOne(public, private netip.Addr, inside netip.Prefix) []Rule {
	public, private = public.Unmap(), private.Unmap()
	snat := []string{"-s", host(private)}
	if inside.IsValid() {
		// Traffic that stays inside (another subnet of the VPC) keeps
		// its private source.
		inside = netip.PrefixFrom(inside.Addr().Unmap(), inside.Bits()).Masked()
		snat = append(snat, "!", "-d", inside.String())
	}
	return []Rule{
		{Chain: "PREROUTING", Args: []string{"-d", host(public), "-j", "DNAT", "--to-destination", private.String()}},
		{Chain: "OUTPUT", Args: []string{"-d", host(public), "-j", "DNAT", "--to-destination", private.String()}},
		{Chain: "POSTROUTING", Args: append(snat, "-j", "SNAT", "--to-source", public.String())},
	}
}

// SourceNAT returns the rule that makes traffic from src leave as addr
// (SNAT --to-source addr) unless it goes to src itself (`! -d src`).
func SourceNAT(src netip.Prefix, addr netip.Addr) []Rule {
	src = netip.PrefixFrom(src.Addr().Unmap(), src.Bits()).Masked()
	return []Rule{
		{Chain: "POSTROUTING", Args: []string{"-s", src.String(), "!", "-d", src.String(), "-j", "SNAT", "--to-source", addr.Unmap().String()}},
	}
}

// PoolNAT returns carrier-grade NAT: traffic from the subscriber range
// inside leaves with a source from pool (every address of the prefix),
// unless it stays inside. --persistent gives a subscriber the same public
// address for all its connections, as RFC 6888 asks of a CGN.
func PoolNAT(inside, pool netip.Prefix) []Rule {
	inside = netip.PrefixFrom(inside.Addr().Unmap(), inside.Bits()).Masked()
	pool = netip.PrefixFrom(pool.Addr().Unmap(), pool.Bits()).Masked()
	to := pool.Addr().String()
	if last := lastAddr(pool); last != pool.Addr() {
		to += "-" + last.String()
	}
	return []Rule{
		{Chain: "POSTROUTING", Args: []string{"-s", inside.String(), "!", "-d", inside.String(), "-j", "SNAT", "--to-source", to, "--persistent"}},
	}
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		if bit := p.Bits() - i*8; bit < 8 {
			b[i] |= byte(0xff >> max(bit, 0))
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// List returns the rules in ns's nat table that carry mark, in table order
// (chain by chain as `iptables -t nat -S` lists them: PREROUTING, INPUT,
// OUTPUT, POSTROUTING, then user chains; rule order within a chain), in
// the canonical form of Rule, the comment stripped.
func List(ns, mark string) ([]Rule, error) {
	if err := checkMark(mark); err != nil {
		return nil, err
	}
	var out []Rule
	err := netns.Do(ns, func() error {
		ipt, err := tool()
		if err != nil {
			return err
		}
		t, err := read(ipt, mark)
		if err != nil {
			return err
		}
		out = t.marked()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("nat rules of namespace %s: %w", ns, err)
	}
	return out, nil
}

// Sync makes the marked rules of ns equal to want: it deletes the marked
// rules that are not wanted and adds the missing ones (appended, or
// inserted before the next wanted rule of the chain so that a chain's
// marked rules keep want's order). Unmarked rules (the host's, another
// lab's) are never touched. It is idempotent and returns whether anything
// changed. Afterwards List(ns, mark) equals want stably sorted into table
// order (want itself when it lists the chains in table order, as OneToOne
// and SourceNAT do). Sync brings want into canonical form first (bare
// addresses get /32, option order, implicit -m tcp); a rule iptables
// still prints differently is reported as an error rather than re-added on
// every call.
func Sync(ns, mark string, want []Rule) (changed bool, err error) {
	if err := checkMark(mark); err != nil {
		return false, err
	}
	canon := make([]Rule, len(want))
	for i, r := range want {
		if err := checkRule(r); err != nil {
			return false, fmt.Errorf("nat rule %q for namespace %s: %w", r.String(), ns, err)
		}
		canon[i] = Canonical(r)
	}
	mu := lockNS(ns)
	mu.Lock()
	defer mu.Unlock()
	err = netns.Do(ns, func() error {
		ipt, err := tool()
		if err != nil {
			return fmt.Errorf("namespace %s: %w", ns, err)
		}
		changed, err = syncTable(ipt, ns, mark, canon)
		return err
	})
	return changed, err
}

var (
	toolOnce sync.Once
	toolIPT  *iptables.IPTables
	toolErr  error
)

// tool finds the iptables binary and its version once; the handle holds
// no namespace and can run anywhere.
func tool() (*iptables.IPTables, error) {
	toolOnce.Do(func() {
		toolIPT, toolErr = iptables.New(iptables.IPFamily(iptables.ProtocolIPv4))
		if toolErr != nil {
			toolErr = fmt.Errorf("iptables: %w", toolErr)
		}
	})
	return toolIPT, toolErr
}

var nsLocks sync.Map // ns name -> *sync.Mutex

// lockNS serialises the Syncs of one namespace within this process.
func lockNS(ns string) *sync.Mutex {
	m, _ := nsLocks.LoadOrStore(ns, new(sync.Mutex))
	return m.(*sync.Mutex)
}

func checkMark(mark string) error {
	if mark == "" || len(mark) > 255 {
		return fmt.Errorf("nat mark %q: must be 1 to 255 characters", mark)
	}
	for _, c := range mark {
		if c <= ' ' || c == '"' || c == '\'' || c == '\\' || c == 0x7f {
			return fmt.Errorf("nat mark %q: no spaces, quotes, backslashes or control characters", mark)
		}
	}
	return nil
}

func checkRule(r Rule) error {
	if r.Chain == "" || strings.HasPrefix(r.Chain, "-") || strings.ContainsAny(r.Chain, " \t") {
		return fmt.Errorf("bad chain %q", r.Chain)
	}
	if len(r.Args) == 0 {
		return errors.New("no arguments")
	}
	for i, a := range r.Args {
		if a == "--comment" || a == "comment" && i > 0 && r.Args[i-1] == "-m" {
			return errors.New("the comment is added from the mark; leave it out")
		}
		switch a {
		case "-A", "--append", "-I", "--insert", "-D", "--delete", "-t", "--table", "-R", "--replace":
			return fmt.Errorf("argument %s: give only matches and target", a)
		}
	}
	return nil
}

// Canonical returns r in the form `iptables -S` prints it (as far as this
// package knows it): IPv4 addresses of -s/-d as masked prefixes ("/32" for
// a host), the options -s, -d, -i, -o, -p first in that order, "-m tcp"
// (udp, sctp) spelled out before port options, long option names of those
// shortened. The other matches and the target keep their order.
func Canonical(r Rule) Rule {
	short := map[string]string{
		"-s": "-s", "--source": "-s", "--src": "-s",
		"-d": "-d", "--destination": "-d", "--dst": "-d",
		"-i": "-i", "--in-interface": "-i",
		"-o": "-o", "--out-interface": "-o",
		"-p": "-p", "--protocol": "-p",
		"-j": "-j", "--jump": "-j",
		"-g": "-g", "--goto": "-g",
	}
	head := map[string][]string{}
	var middle, tail []string
	args := r.Args
	for i := 0; i < len(args); i++ {
		a := args[i]
		if o := short[a]; o == "-j" || o == "-g" {
			tail = append([]string{o}, args[i+1:]...)
			break
		}
		neg := false
		if a == "!" && i+1 < len(args) {
			if o := short[args[i+1]]; o != "" && o != "-j" && o != "-g" {
				neg, i, a = true, i+1, args[i+1]
			}
		}
		o := short[a]
		if o == "" || i+1 >= len(args) {
			if neg {
				middle = append(middle, "!")
			}
			middle = append(middle, a)
			continue
		}
		v := args[i+1]
		i++
		if o == "-s" || o == "-d" {
			v = canonAddr(v)
		}
		if o == "-p" {
			v = strings.ToLower(v)
		}
		var opt []string
		if neg {
			opt = append(opt, "!")
		}
		head[o] = append(opt, o, v)
	}
	out := []string{}
	for _, o := range []string{"-s", "-d", "-i", "-o", "-p"} {
		out = append(out, head[o]...)
	}
	if p := head["-p"]; len(p) > 0 && !slices.Contains(p, "!") {
		proto := p[len(p)-1]
		if (proto == "tcp" || proto == "udp" || proto == "sctp") && needsProtoMatch(middle, proto) {
			out = append(out, "-m", proto)
		}
	}
	out = append(out, middle...)
	out = append(out, tail...)
	return Rule{Chain: r.Chain, Args: out}
}

// needsProtoMatch reports whether middle uses port options of proto
// without loading its match explicitly (iptables then adds "-m proto").
func needsProtoMatch(middle []string, proto string) bool {
	uses := false
	for i, a := range middle {
		if a == "-m" && i+1 < len(middle) && (middle[i+1] == proto || middle[i+1] == "multiport") {
			return false // explicit, or the ports belong to multiport
		}
		switch a {
		case "--dport", "--sport", "--destination-port", "--source-port", "--tcp-flags", "--syn", "--tcp-option", "--chunk-types":
			uses = true
		}
	}
	return uses
}

func canonAddr(v string) string {
	if a, err := netip.ParseAddr(v); err == nil && a.Zone() == "" {
		return host(a.Unmap())
	}
	if p, err := netip.ParsePrefix(v); err == nil {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked().String()
	}
	return v
}

// line is one rule of a chain as `iptables -S CHAIN` printed it.
type line struct {
	rule   Rule // comment stripped when marked
	marked bool
}

// table is the nat table at one moment: its chains in order, each with
// all its rules.
type table struct {
	chains []string
	rules  map[string][]line
}

func (t *table) marked() []Rule {
	var out []Rule
	for _, c := range t.chains {
		for _, l := range t.rules[c] {
			if l.marked {
				out = append(out, l.rule)
			}
		}
	}
	return out
}

// read lists the nat table of the calling thread's namespace.
func read(ipt *iptables.IPTables, mark string) (*table, error) {
	chains, err := ipt.ListChains(Table)
	if err != nil {
		return nil, err
	}
	t := &table{chains: chains, rules: map[string][]line{}}
	for _, c := range chains {
		lines, err := ipt.List(Table, c)
		if err != nil {
			return nil, err
		}
		for _, s := range lines {
			tok, err := split(s)
			if err != nil {
				return nil, fmt.Errorf("parse %q: %w", s, err)
			}
			if len(tok) < 2 || tok[0] != "-A" {
				continue // -P or -N
			}
			if tok[1] != c {
				return nil, fmt.Errorf("parse %q: rule of chain %s listed for %s", s, tok[1], c)
			}
			args, marked := stripMark(tok[2:], mark)
			t.rules[c] = append(t.rules[c], line{rule: Rule{Chain: c, Args: args}, marked: marked})
		}
	}
	return t, nil
}

// stripMark removes "-m comment --comment mark" from args. Only a rule
// with exactly this comment is marked.
func stripMark(args []string, mark string) ([]string, bool) {
	for i := 0; i+3 < len(args); i++ {
		if args[i] == "-m" && args[i+1] == "comment" && args[i+2] == "--comment" && args[i+3] == mark {
			return slices.Concat(args[:i], args[i+4:]), true
		}
	}
	return args, false
}

// split breaks one line of `iptables -S` into words. iptables-nft quotes
// every comment ("labctl.region"), iptables-legacy only those that need
// it; inside quotes a backslash escapes the next character.
func split(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case quoted && c == '"':
			quoted = false
		case quoted:
			cur.WriteByte(c)
		case c == '"':
			quoted, inWord = true, true
		case c == ' ' || c == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		return nil, errors.New("unterminated quote")
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

func spec(r Rule, mark string) []string {
	return slices.Concat(r.Args, []string{"-m", "comment", "--comment", mark})
}

func describe(ns, mark, op string, r Rule) string {
	return fmt.Sprintf("namespace %s: %s nat rule %q (mark %s)", ns, op, r.String(), mark)
}

// syncTable runs in the namespace (the calling thread's).
func syncTable(ipt *iptables.IPTables, ns, mark string, want []Rule) (changed bool, err error) {
	t, err := read(ipt, mark)
	if err != nil {
		return false, fmt.Errorf("nat rules of namespace %s: %w", ns, err)
	}
	byChain := map[string][]Rule{}
	var order []string // chains of want, table order first
	for _, r := range want {
		if _, ok := byChain[r.Chain]; !ok {
			order = append(order, r.Chain)
		}
		byChain[r.Chain] = append(byChain[r.Chain], r)
	}
	for _, c := range t.chains {
		if _, ok := byChain[c]; !ok {
			byChain[c] = nil // marked rules of chains want leaves out go
		}
	}
	chains := slices.Clone(t.chains)
	for _, c := range order {
		if !slices.Contains(chains, c) {
			chains = append(chains, c) // missing chain: the append fails and says so
		}
	}
	for _, c := range chains {
		ch, err := syncChain(ipt, ns, mark, t.rules[c], byChain[c])
		changed = changed || ch
		if err != nil {
			return changed, err
		}
	}
	if !changed {
		return false, nil
	}
	// Check that iptables prints the rules as they were given; otherwise
	// every Sync would replace them again.
	t, err = read(ipt, mark)
	if err != nil {
		return true, fmt.Errorf("nat rules of namespace %s: %w", ns, err)
	}
	if got, exp := t.marked(), sortByChain(want, t.chains); !slices.EqualFunc(got, exp, Rule.Equal) {
		return true, fmt.Errorf("namespace %s: after sync the nat rules with mark %s are %s, want %s: give rules in the form `iptables -t nat -S` prints",
			ns, mark, quoteAll(got), quoteAll(exp))
	}
	return true, nil
}

func quoteAll(rs []Rule) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = strconv.Quote(r.String())
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// BuiltinChains are the nat table's chains in the order iptables lists them.
var BuiltinChains = []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}

// TableOrder orders rules as List reports them: chain by chain, keeping
// their order within a chain.
func TableOrder(rules []Rule) []Rule { return sortByChain(rules, BuiltinChains) }

// sortByChain orders rules chain by chain as chains lists them (unknown
// chains last), keeping the order within a chain.
func sortByChain(rules []Rule, chains []string) []Rule {
	out := slices.Clone(rules)
	rank := func(c string) int {
		if i := slices.Index(chains, c); i >= 0 {
			return i
		}
		return len(chains)
	}
	slices.SortStableFunc(out, func(a, b Rule) int { return rank(a.Chain) - rank(b.Chain) })
	return out
}

// syncChain makes the marked rules among cur (all rules of one chain, in
// order) equal to want. It keeps a longest common subsequence of the
// marked rules and want, deletes the other marked rules and inserts the
// missing wanted ones before the next kept one (or appends them), so that
// removing or adding one wanted rule changes that rule only.
func syncChain(ipt *iptables.IPTables, ns, mark string, cur []line, want []Rule) (changed bool, err error) {
	var have []int // indexes into cur of the marked rules
	for i, l := range cur {
		if l.marked {
			have = append(have, i)
		}
	}
	keepHave, keepWant := lcs(len(have), len(want), func(i, j int) bool { return cur[have[i]].rule.Equal(want[j]) })

	chain := slices.Clone(cur)
	live := make([]*line, len(chain)) // the chain as it is now, for positions
	for i := range chain {
		live[i] = &chain[i]
	}
	for k, i := range have {
		if keepHave[k] {
			continue
		}
		if err := deleteRule(ipt, live, &chain[i], mark); err != nil {
			return changed, fmt.Errorf("%s: %w", describe(ns, mark, "delete", cur[i].rule), err)
		}
		changed = true
		live = slices.DeleteFunc(live, func(l *line) bool { return l == &chain[i] })
	}

	// The kept rule each wanted one is matched to, to insert before it.
	anchor := make([]*line, len(want))
	{
		k := 0
		for hi, i := range have {
			if !keepHave[hi] {
				continue
			}
			for !keepWant[k] {
				k++
			}
			anchor[k] = &chain[i]
			k++
		}
	}
	for j, r := range want {
		if keepWant[j] {
			continue
		}
		var next *line
		for k := j + 1; k < len(want); k++ {
			if keepWant[k] {
				next = anchor[k]
				break
			}
		}
		nl := &line{rule: r, marked: true}
		if next == nil {
			if err := ipt.Append(Table, r.Chain, spec(r, mark)...); err != nil {
				return changed, fmt.Errorf("%s: %w", describe(ns, mark, "append", r), err)
			}
			live = append(live, nl)
		} else {
			pos := slices.Index(live, next)
			if err := ipt.Insert(Table, r.Chain, pos+1, spec(r, mark)...); err != nil {
				return changed, fmt.Errorf("%s: %w", describe(ns, mark, fmt.Sprintf("insert at %d", pos+1), r), err)
			}
			live = slices.Insert(live, pos, nl)
		}
		changed = true
	}
	return changed, nil
}

// lcs marks a longest common subsequence of two sequences of lengths n
// and m under eq.
func lcs(n, m int, eq func(i, j int) bool) (inA, inB []bool) {
	inA, inB = make([]bool, n), make([]bool, m)
	// l[i][j] = LCS length of a[i:] and b[j:].
	l := make([][]int, n+1)
	for i := range l {
		l[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if eq(i, j) {
				l[i][j] = l[i+1][j+1] + 1
			} else {
				l[i][j] = max(l[i+1][j], l[i][j+1])
			}
		}
	}
	for i, j := 0, 0; i < n && j < m; {
		switch {
		case eq(i, j):
			inA[i], inB[j] = true, true
			i++
			j++
		case l[i+1][j] >= l[i][j+1]:
			i++
		default:
			j++
		}
	}
	return inA, inB
}

// deleteRule deletes the marked rule l of the chain live. A rule that is
// the only marked one of its kind is deleted by its spec, comment
// included: iptables-nft compares comments, so no unmarked rule can match.
// Of several equal marked rules iptables would delete the first, so one of
// those is deleted by its position, once `iptables -S CHAIN N` has shown
// that the position holds it.
func deleteRule(ipt *iptables.IPTables, live []*line, l *line, mark string) error {
	r, n, pos := l.rule, 0, 0
	for p, x := range live {
		if x.marked && x.rule.Equal(r) {
			n++
		}
		if x == l {
			pos = p + 1
		}
	}
	if n <= 1 {
		return ipt.Delete(Table, r.Chain, spec(r, mark)...)
	}
	s, err := ipt.ListById(Table, r.Chain, pos)
	if err != nil {
		return err
	}
	tok, err := split(s)
	if err != nil {
		return fmt.Errorf("parse %q: %w", s, err)
	}
	if len(tok) < 2 {
		return fmt.Errorf("rule %d of %s is %q, not the rule to delete", pos, r.Chain, s)
	}
	args, marked := stripMark(tok[2:], mark)
	if !marked || !slices.Equal(args, r.Args) || tok[1] != r.Chain {
		return fmt.Errorf("rule %d of %s is %q, not the rule to delete (changed meanwhile?)", pos, r.Chain, s)
	}
	return ipt.DeleteById(Table, r.Chain, pos)
}
