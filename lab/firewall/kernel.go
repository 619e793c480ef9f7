package firewall

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"labctl/lab/runner"
	"labctl/lab/topology"
)

// cmder runs the part's commands (a fake in unit tests).
var cmder runner.Cmder = runner.Default

// nft runs the nft program inside a namespace ("" for the current one),
// feeding it stdin; its output comes back with the error too.
func nft(ctx context.Context, ns string, stdin []byte, args ...string) ([]byte, error) {
	c := cmder
	if ns != "" {
		c = runner.Netns(cmder, ns)
	}
	cmd := c.Command(ctx, "nft", args...)
	if stdin != nil {
		cmd.SetStdin(bytes.NewReader(stdin))
	}
	return cmd.CombinedOutput()
}

// load replaces the lab's table with script in one transaction.
func load(ctx context.Context, ns, script string) error {
	_, err := nft(ctx, ns, []byte(script), "-f", "-")
	return err
}

// remove deletes the lab's table (nothing when it is gone already).
func remove(ctx context.Context, ns string) error {
	script := fmt.Sprintf("table inet %s\ndelete table inet %s\n", Table, Table)
	_, err := nft(ctx, ns, []byte(script), "-f", "-")
	return err
}

// table is the lab's table as `nft -j list ruleset` shows it.
type table struct{ Rules []RuleInfo }

// list reads the lab's table in a namespace; nil when there is none.
func list(ctx context.Context, ns string) (*table, error) {
	out, err := nft(ctx, ns, nil, "-j", "list", "ruleset")
	if err != nil {
		return nil, err
	}
	return parse(out)
}

// tableComment reads the comment of the lab's table in a namespace (nft's
// JSON leaves table comments out, its text shows them); ok is false when
// there is no such table.
func tableComment(ctx context.Context, ns string) (comment string, ok bool, err error) {
	out, err := nft(ctx, ns, nil, "list", "table", "inet", Table)
	if err != nil {
		if bytes.Contains(out, []byte("No such file or directory")) {
			return "", false, nil
		}
		return "", false, err
	}
	for _, l := range strings.Split(string(out), "\n") {
		if c, found := strings.CutPrefix(strings.TrimSpace(l), "comment "); found {
			if q, err := strconv.Unquote(c); err == nil {
				return q, true, nil
			}
		}
	}
	return "", true, nil
}

// The parts of nft's JSON output that are read back.
type nftJSON struct {
	Nftables []struct {
		Table *struct {
			Family string `json:"family"`
			Name   string `json:"name"`
		} `json:"table"`
		Rule *struct {
			Family  string            `json:"family"`
			Table   string            `json:"table"`
			Chain   string            `json:"chain"`
			Comment string            `json:"comment"`
			Expr    []json.RawMessage `json:"expr"`
		} `json:"rule"`
	} `json:"nftables"`
}

// parse picks the lab's table and its rules out of `nft -j list ruleset`.
func parse(out []byte) (*table, error) {
	var doc nftJSON
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("nft -j list ruleset: %w", err)
	}
	var tb *table
	for _, o := range doc.Nftables {
		switch {
		case o.Table != nil && o.Table.Family == "inet" && o.Table.Name == Table:
			tb = &table{}
		case o.Rule != nil && o.Rule.Family == "inet" && o.Rule.Table == Table && tb != nil:
			tb.Rules = append(tb.Rules, ruleInfo(o.Rule.Comment, o.Rule.Expr))
		}
	}
	return tb, nil
}

// ruleInfo reads a rule's counter and verdict, and a short text of its
// matches.
func ruleInfo(name string, exprs []json.RawMessage) RuleInfo {
	r := RuleInfo{Name: name}
	var match []string
	for _, e := range exprs {
		var m map[string]json.RawMessage
		if json.Unmarshal(e, &m) != nil {
			continue
		}
		for k, v := range m {
			switch k {
			case "counter":
				var c struct{ Packets, Bytes uint64 }
				json.Unmarshal(v, &c)
				r.Packets, r.Bytes = c.Packets, c.Bytes
			case "accept", "drop", "reject":
				r.Verdict = k
			case "match":
				match = append(match, matchText(v))
			}
		}
	}
	r.Match = strings.Join(match, " ")
	if r.Match == "" {
		r.Match = "any"
	}
	return r
}

// matchText renders one JSON match ({"left":…, "right":…}) compactly.
func matchText(v json.RawMessage) string {
	var m struct {
		Left  map[string]json.RawMessage `json:"left"`
		Right json.RawMessage            `json:"right"`
	}
	if json.Unmarshal(v, &m) != nil {
		return "?"
	}
	var left []string
	for k, x := range m.Left {
		var f map[string]any
		if json.Unmarshal(x, &f) == nil {
			if p, ok := f["protocol"]; ok {
				left = append(left, fmt.Sprintf("%v %v", p, f["field"]))
				continue
			}
			if key, ok := f["key"]; ok {
				left = append(left, fmt.Sprintf("%s %v", k, key))
				continue
			}
		}
		left = append(left, k)
	}
	return strings.Join(left, " ") + " " + compactJSON(m.Right)
}

// compactJSON shows a JSON value as nft would: sets as {a, b}, prefixes
// as a/n, strings bare.
func compactJSON(v json.RawMessage) string {
	var x any
	if json.Unmarshal(v, &x) != nil {
		return string(v)
	}
	var show func(any) string
	show = func(x any) string {
		switch y := x.(type) {
		case string:
			return y
		case float64:
			return fmt.Sprint(y)
		case []any:
			parts := make([]string, len(y))
			for i, e := range y {
				parts[i] = show(e)
			}
			return "{" + strings.Join(parts, ",") + "}"
		case map[string]any:
			if s, ok := y["set"]; ok {
				return show(s)
			}
			if p, ok := y["prefix"].(map[string]any); ok {
				return fmt.Sprintf("%v/%v", p["addr"], p["len"])
			}
		}
		b, _ := json.Marshal(x)
		return string(b)
	}
	return show(x)
}

// RuleInfo is one rule of a firewall with its counters.
type RuleInfo struct {
	Name    string `json:"name"`
	Match   string `json:"match"`
	Verdict string `json:"verdict"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Info is one firewall as read from its namespace.
type Info struct {
	Node  string     `json:"node"`
	Hash  string     `json:"hash,omitempty"`
	Rules []RuleInfo `json:"rules"`
	Error string     `json:"error,omitempty"`
}

// Read reads a firewall's rules and counters from the kernel.
func Read(ctx context.Context, lab, node string) (*Info, error) {
	ns := topology.Namespace(lab, node)
	tb, err := list(ctx, ns)
	if err != nil {
		return nil, err
	}
	if tb == nil {
		return nil, fmt.Errorf("%s: no table inet %s", ns, Table)
	}
	c, _, err := tableComment(ctx, ns)
	if err != nil {
		return nil, err
	}
	return &Info{Node: node, Hash: hashOf(lab, c), Rules: tb.Rules}, nil
}

// Counter returns the packets counted by the rule of that name.
func (i *Info) Counter(name string) (uint64, bool) {
	for _, r := range i.Rules {
		if r.Name == name {
			return r.Packets, true
		}
	}
	return 0, false
}

// probe loads a small stateful, counting rule set in the current
// namespace (doctor runs it in a throwaway one).
func probe(ctx context.Context) error {
	script, _ := Ruleset("doctor", &Firewall{Inside: []string{"lo"}, Allow: []*Rule{{Proto: "tcp", Ports: []int{443}}}})
	if _, err := nft(ctx, "", []byte(script), "-f", "-"); err != nil {
		return err
	}
	out, err := nft(ctx, "", nil, "-j", "list", "ruleset")
	if err != nil {
		return err
	}
	tb, err := parse(out)
	if err != nil {
		return err
	}
	if tb == nil || len(tb.Rules) != 5 {
		return fmt.Errorf("nft loaded the table but lists it back differently")
	}
	return nil
}
