package nat

import (
	"context"
	"fmt"
	"strings"

	"labctl/lab/netns"
	"labctl/lab/runner"
)

// dropRules are the filter rules that make an interface drop everything:
// what comes in on it, what leaves by it and what is forwarded either way.
var dropRules = [][]string{
	{"INPUT", "-i"},
	{"OUTPUT", "-o"},
	{"FORWARD", "-i"},
	{"FORWARD", "-o"},
}

// DropAll makes iface of namespace ns drop every packet while the link
// stays up (a link failing silently, which only timers notice): DROP
// rules inserted first in the filter table's INPUT, OUTPUT and FORWARD
// chains. UndropAll takes them out again.
func DropAll(ns, iface string) error {
	return onFilter(ns, iface, "drop", func(ipt iptablesHandle, chain string, spec []string) error {
		return ipt.Insert("filter", chain, 1, spec...)
	})
}

// UndropAll deletes the rules DropAll added for iface of ns (every copy);
// rules that are not there are no error.
func UndropAll(ns, iface string) error {
	return onFilter(ns, iface, "undrop", func(ipt iptablesHandle, chain string, spec []string) error {
		for {
			ok, err := ipt.Exists("filter", chain, spec...)
			if err != nil || !ok {
				return err
			}
			if err := ipt.Delete("filter", chain, spec...); err != nil {
				return err
			}
		}
	})
}

// iptablesHandle is what onFilter's callers use of go-iptables.
type iptablesHandle interface {
	Insert(table, chain string, pos int, rulespec ...string) error
	Exists(table, chain string, rulespec ...string) (bool, error)
	Delete(table, chain string, rulespec ...string) error
}

func onFilter(ns, iface, what string, fn func(ipt iptablesHandle, chain string, spec []string) error) error {
	if iface == "" || strings.HasPrefix(iface, "-") || strings.ContainsAny(iface, " \t") {
		return fmt.Errorf("namespace %s: %s interface %q: bad name", ns, what, iface)
	}
	err := netns.Do(ns, func() error {
		ipt, err := tool()
		if err != nil {
			return err
		}
		for _, r := range dropRules {
			if err := fn(ipt, r[0], []string{r[1], iface, "-j", "DROP"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("namespace %s: %s %s: %w", ns, what, iface, err)
	}
	return nil
}

// Probe checks that the iptables binary ipt works for NAT gateways: that
// it lists the nat table and adds a MASQUERADE rule, inside a throwaway
// namespace, so nothing of the host's changes. It returns ipt's version
// line (`iptables -V`, which names the backend: nf_tables or legacy), ""
// when that fails. The commands run from inside netns.Temp: the goroutine
// is locked to the thread that was moved, and Go forks the child from
// that thread, so the child starts in the temp namespace.
func Probe(ctx context.Context, ipt string) (version string, err error) {
	if out, err := runner.Default.Command(ctx, ipt, "-V").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	err = netns.Temp(func() error {
		// -w: the legacy backend takes a host-wide lock that labs may hold.
		if _, err := runner.Default.Command(ctx, ipt, "-w", "3", "-t", "nat", "-L", "-n").CombinedOutput(); err != nil {
			return err
		}
		_, err := runner.Default.Command(ctx, ipt, "-w", "3", "-t", "nat", "-A", "POSTROUTING", "-j", "MASQUERADE").CombinedOutput()
		return err
	})
	return version, err
}
