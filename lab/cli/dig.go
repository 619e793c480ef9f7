package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/spf13/cobra"

	"labctl/lab/dns"
	"labctl/lab/netns"
	"labctl/lab/topology"
)

// DigResult is what `labctl dig --format json` prints.
type DigResult struct {
	Lab        string     `json:"lab"`
	Node       string     `json:"node"`
	Server     string     `json:"server"`
	ServerNode string     `json:"server_node,omitempty"`
	Name       string     `json:"name"`
	Type       string     `json:"type"`
	Rcode      string     `json:"rcode"`
	Answer     []string   `json:"answer"`
	Authority  []string   `json:"authority,omitempty"`
	Addresses  []string   `json:"addresses"` // the A/AAAA records of the answer, in order
	RTT        float64    `json:"rtt_ms"`
	TCP        bool       `json:"tcp,omitempty"`
	Trace      *dns.Trace `json:"trace,omitempty"`
}

func digCmd(g *globals) *cobra.Command {
	var lab, server string
	var tcp, noTrace bool
	var wait time.Duration
	c := &cobra.Command{
		Use:   "dig NODE NAME [TYPE]",
		Short: "Resolve a name from a node and show the whole chain",
		Long: `Ask a DNS question from inside NODE's namespace, of the resolver its
/etc/netns resolv.conf names (the topology's dns: nameservers), and print
how the answer was found. The query is a real DNS packet; it carries a lab
EDNS0 option asking the resolver to send back its steps: each server it
asked (root, TLD, authoritative, GSLB) and what came back (referral, CNAME,
answer), or that the answer came from its cache and with how much TTL left.

TYPE defaults to A. --server asks another server instead (an address of a
lab node, or any address the node can reach); an authoritative server
answers for itself, without steps. When the lab runs BGP, dig first waits
(up to --wait) until routing has converged, so it can follow up at once
(sessions over links cut with 'labctl link down' are not waited for).
The same packet can be sent with the real dig tool:
labctl exec NODE -- dig NAME`,
		Example: `  sudo labctl dig ue1 www.shop.example          # the chain, first time
  sudo labctl dig ue1 www.shop.example          # again: the resolver's cache
  sudo labctl dig home1 www.shop.example        # another carrier, another region
  sudo labctl dig ue1 www.gslb.shop.example --server 203.0.113.54
  sudo labctl dig ue1 www.shop.example --format json | jq -r '.addresses[]'`,
		Args:              cobra.RangeArgs(2, 3),
		ValidArgsFunction: completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			qtype := mdns.TypeA
			if len(args) == 3 {
				t, ok := mdns.StringToType[strings.ToUpper(args[2])]
				if !ok {
					return fmt.Errorf("%q is not a DNS record type (A, AAAA, CNAME, NS, SOA, TXT, MX, ...)", args[2])
				}
				qtype = t
			}
			name := args[1]
			if err := dns.CheckName(name); err != nil {
				return fmt.Errorf("%s is not a domain name: %w", dns.QuoteName(name), err)
			}
			if err := requireRoot("dig", "it enters the lab's namespaces"); err != nil {
				return err
			}
			lab, rec, err := labRecord(lab)
			if err != nil {
				return err
			}
			ns, node, err := nodeIn(rec, lab, args[0])
			if err != nil {
				return err
			}
			if server == "" {
				if node.DNS == nil || len(node.DNS.Nameservers) == 0 {
					return fmt.Errorf("node %s has no resolver (no dns: nameservers in the topology): give --server ADDRESS", args[0])
				}
				server = node.DNS.Nameservers[0]
			}
			if err := waitRouting(cmd.Context(), g, lab, rec.Topology, wait); err != nil {
				return err
			}
			res, err := dig(cmd.Context(), ns, server, name, qtype, dns.QueryOptions{Trace: !noTrace, TCP: tcp})
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			out := digResult(rec.Topology, lab, args[0], server, mdns.Fqdn(name), qtype, res)
			if g.format == "json" {
				return g.json(out)
			}
			printDig(g.out, rec.Topology, out)
			return nil
		},
	}
	c.Flags().StringVar(&lab, "lab", "", "lab name (default: the only lab up)")
	c.Flags().StringVar(&server, "server", "", "ask this server instead of the node's resolver")
	c.Flags().BoolVar(&tcp, "tcp", false, "ask over TCP")
	c.Flags().BoolVar(&noTrace, "no-trace", false, "do not ask the resolver for its steps")
	c.Flags().DurationVar(&wait, "wait", 30*time.Second, "when the lab runs BGP, how long to wait for it to converge first")
	return c
}

// dig sends one query from inside namespace ns.
func dig(ctx context.Context, ns, server, name string, qtype uint16, o dns.QueryOptions) (*dns.Result, error) {
	var res *dns.Result
	err := netns.Do(ns, func() error {
		var err error
		res, err = dns.Query(ctx, server, name, qtype, o)
		return err
	})
	return res, err
}

func digResult(t *topology.Topology, lab, node, server, name string, qtype uint16, res *dns.Result) *DigResult {
	m := res.Msg
	out := &DigResult{Lab: lab, Node: node, Server: server, Name: name, Type: mdns.Type(qtype).String(), Rcode: dns.RcodeName(m.Rcode),
		Answer: []string{}, Addresses: []string{}, RTT: ms(res.RTT), TCP: res.TCP, Trace: res.Trace}
	if a, err := netip.ParseAddr(server); err == nil && t != nil {
		out.ServerNode = t.IPv4Owners()[a]
	}
	for _, rr := range m.Answer {
		out.Answer = append(out.Answer, rr.String())
		switch r := rr.(type) {
		case *mdns.A:
			out.Addresses = append(out.Addresses, r.A.String())
		case *mdns.AAAA:
			out.Addresses = append(out.Addresses, r.AAAA.String())
		}
	}
	for _, rr := range m.Ns {
		out.Authority = append(out.Authority, rr.String())
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// msText shows milliseconds with two decimals below one.
func msText(v float64) string {
	if v < 1 {
		return fmt.Sprintf("%.2f ms", v)
	}
	return fmt.Sprintf("%.1f ms", v)
}

// printDig prints the question, the resolver's steps and the answer.
func printDig(w io.Writer, t *topology.Topology, r *DigResult) {
	owners := map[netip.Addr]string{}
	if t != nil {
		owners = t.IPv4Owners()
	}
	who := func(addr string) string {
		if a, err := netip.ParseAddr(addr); err == nil && owners[a] != "" {
			return owners[a] + " (" + addr + ")"
		}
		return addr
	}
	fmt.Fprintf(w, "%s asks %s: %s %s\n", r.Node, who(r.Server), r.Name, r.Type)
	if tr := r.Trace; tr != nil {
		how := "resolved in " + msText(tr.Elapsed)
		if tr.Cached {
			how = "answered from its cache"
		}
		fmt.Fprintf(w, "\n%s %s:\n", tr.Server, how)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for i, s := range tr.Steps {
			from := "cache"
			if !s.Cache {
				from = who(s.Server)
				if s.Zone != "" {
					from += " for " + s.Zone
				}
			}
			took := ""
			if !s.Cache {
				took = msText(s.Duration)
				if s.TCP {
					took += " (tcp)"
				}
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s %s\t%s\t%s\n", i+1, from, s.Name, s.Type, stepSummary(s), took)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\nanswer: %s in %s", r.Rcode, msText(r.RTT))
	if r.TCP {
		fmt.Fprint(w, " (tcp)")
	}
	fmt.Fprintln(w)
	for _, a := range r.Answer {
		fmt.Fprintf(w, "  %s\n", a)
	}
	if len(r.Answer) == 0 {
		for _, a := range r.Authority {
			fmt.Fprintf(w, "  %s\n", a)
		}
	}
}

// stepSummary is one step's outcome in a few words.
func stepSummary(s dns.Step) string {
	data := func() string {
		var v []string
		for _, rec := range s.Records {
			f := strings.Fields(rec)
			if len(f) >= 5 {
				v = append(v, strings.Join(f[4:], " "))
			}
		}
		return strings.Join(v, ", ")
	}
	ttl := ""
	if s.Cache {
		ttl = fmt.Sprintf(" (%ds left)", s.TTL)
	}
	switch s.Kind {
	case dns.KindReferral:
		zone := ""
		if len(s.Records) > 0 {
			zone = strings.Fields(s.Records[0])[0] + " "
		}
		return "referral to " + zone + "at " + data() + ttl
	case dns.KindCNAME:
		return "CNAME " + data() + ttl
	case dns.KindAnswer:
		return data() + ttl
	case dns.KindNXDomain:
		return "no such name (NXDOMAIN)" + ttl
	case dns.KindNoData:
		return "no " + s.Type + " records (NODATA)" + ttl
	case dns.KindError:
		if s.Error != "" {
			return "error: " + s.Error
		}
		return "error: " + s.Rcode
	}
	return s.Kind + " " + data() + ttl
}
