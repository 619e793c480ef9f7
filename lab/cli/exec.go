package cli

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"labctl/lab/netns"
	"labctl/lab/runner"
)

// execIn replaces labctl with `ip netns exec NS argv...`, so the terminal,
// signals and exit status belong to the command itself, and the node's
// /etc/netns files are bind-mounted just as for its services. Like serve
// ovsdb it replaces labctl (syscall.Exec) instead of starting a child
// through lab/runner, with the runner's command line (runner.NetnsArgv).
func execIn(ns string, argv []string) error {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("ip (iproute2) is needed: %w", err)
	}
	if !netns.Exists(ns) {
		return fmt.Errorf("namespace %s does not exist (is the lab up? labctl status)", ns)
	}
	return syscall.Exec(ip, runner.NetnsArgv(ns, argv...), os.Environ())
}

func execCmd(g *globals) *cobra.Command {
	var lab string
	c := &cobra.Command{
		Use:   "exec NODE -- COMMAND [ARG...]",
		Short: "Run a command inside a node's namespace",
		Long: `Run a command inside a node, as 'ip netns exec <lab>-<node>' does: it sees
only the node's interfaces, routes and /etc/netns files. The exit status is
the command's.`,
		Example: `  sudo labctl exec h1 -- ping -c1 10.0.2.10
  sudo labctl exec r1 -- ip route
  sudo labctl exec h1 -- bash`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return fmt.Errorf("write: labctl exec NODE -- COMMAND [ARG...]")
			}
			lab, err := resolveLab(lab)
			if err != nil {
				return err
			}
			ns, _, err := nodeNamespace(lab, args[0])
			if err != nil {
				return err
			}
			return execIn(ns, args[1:])
		},
	}
	c.Flags().StringVar(&lab, "lab", "", "lab name (default: the only lab up)")
	return c
}

func captureCmd(g *globals) *cobra.Command {
	var lab, write, filter string
	var count int
	c := &cobra.Command{
		Use:   "capture NODE IFACE [-w FILE.pcap] [-c N] [--filter BPF]",
		Short: "Capture packets on a node's interface with tcpdump",
		Long: `Run tcpdump inside the node on one interface, in immediate mode so that
even a short capture stops with every packet. With -w the packets go to a
pcap file that Wireshark opens; without it tcpdump prints them. Stop with
Ctrl-C or -c.`,
		Example: `  sudo labctl capture r1 eth1 -c 4 --filter icmp
  sudo labctl capture h2 eth0 -w /tmp/h2.pcap -c 100
  sudo labctl capture r1 eth0 -w - | wireshark -k -i -`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			lab, err := resolveLab(lab)
			if err != nil {
				return err
			}
			ns, _, err := nodeNamespace(lab, args[0])
			if err != nil {
				return err
			}
			if _, err := exec.LookPath("tcpdump"); err != nil {
				return fmt.Errorf("tcpdump is not installed (apt-get install -y tcpdump)")
			}
			h, err := netns.Handle(ns)
			if err != nil {
				return err
			}
			_, lerr := h.LinkByName(args[1])
			h.Close()
			if lerr != nil {
				return fmt.Errorf("node %s has no interface %q", args[0], args[1])
			}
			return execIn(ns, tcpdumpArgs(args[1], write, count, filter))
		},
	}
	c.Flags().StringVar(&lab, "lab", "", "lab name (default: the only lab up)")
	c.Flags().StringVarP(&write, "write", "w", "", "write a pcap file (- for stdout)")
	c.Flags().IntVarP(&count, "count", "c", 0, "stop after N packets")
	c.Flags().StringVar(&filter, "filter", "", "BPF capture filter, e.g. 'tcp port 80'")
	return c
}

// tcpdumpArgs builds the tcpdump command line of a capture.
func tcpdumpArgs(iface, write string, count int, filter string) []string {
	argv := []string{"tcpdump", "-i", iface, "-U", "--immediate-mode", "-nn"}
	if write != "" {
		// -Z root: write where root can, without tcpdump dropping privileges.
		argv = append(argv, "-w", write, "-Z", "root")
	} else {
		// Line-buffered: each packet reaches a pipe or file at once.
		argv = append(argv, "-l")
	}
	if count > 0 {
		argv = append(argv, "-c", strconv.Itoa(count))
	}
	if filter != "" {
		argv = append(argv, filter)
	}
	return argv
}
