package links

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"labctl/lab/internal/labtest"
)

// txChecksumming is what `ethtool -k` prints for tx-checksumming in ns.
func txChecksumming(t *testing.T, ns, iface string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "ethtool", "-k", iface).CombinedOutput()
	if err != nil {
		t.Fatalf("ethtool -k %s: %v\n%s", iface, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "tx-checksumming:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no tx-checksumming in ethtool -k output:\n%s", out)
	return ""
}

func TestTxChecksumRoot(t *testing.T) {
	labtest.NeedRoot(t)
	labtest.NeedTool(t, "ip", "ethtool")
	ns := labtest.Netns(t, "ethtool-test")
	// Both ends inside the test's namespace.
	if out, err := exec.Command("ip", "-n", ns, "link", "add", "ve0", "type", "veth", "peer", "name", "ve1").CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v\n%s", err, out)
	}

	on, err := TxChecksum(ns, "ve0")
	if err != nil || !on {
		t.Fatalf("fresh veth: TxChecksum = %v, %v; want on", on, err)
	}
	if s := txChecksumming(t, ns, "ve0"); s != "on" {
		t.Fatalf("fresh veth: ethtool says tx-checksumming %q", s)
	}

	if err := SetTxChecksum(ns, "ve0", false); err != nil {
		t.Fatal(err)
	}
	if on, err := TxChecksum(ns, "ve0"); err != nil || on {
		t.Fatalf("after off: TxChecksum = %v, %v", on, err)
	}
	if s := txChecksumming(t, ns, "ve0"); s != "off" {
		t.Fatalf("after off: ethtool says tx-checksumming %q", s)
	}
	// The peer is untouched.
	if on, err := TxChecksum(ns, "ve1"); err != nil || !on {
		t.Fatalf("peer: TxChecksum = %v, %v", on, err)
	}
	// Off again is no error.
	if err := SetTxChecksum(ns, "ve0", false); err != nil {
		t.Fatal(err)
	}

	if err := SetTxChecksum(ns, "ve0", true); err != nil {
		t.Fatal(err)
	}
	if on, err := TxChecksum(ns, "ve0"); err != nil || !on {
		t.Fatalf("after on: TxChecksum = %v, %v", on, err)
	}
	if s := txChecksumming(t, ns, "ve0"); s != "on" {
		t.Fatalf("after on: ethtool says tx-checksumming %q", s)
	}

	// Errors name the interface and the namespace.
	_, err = TxChecksum(ns, "nosuch0")
	if !errors.Is(err, unix.ENODEV) || !strings.Contains(err.Error(), "nosuch0") || !strings.Contains(err.Error(), ns) {
		t.Fatalf("missing interface: %v", err)
	}
	if err := SetTxChecksum(ns+"-missing", "ve0", false); err == nil {
		t.Fatal("missing namespace: no error")
	}
}
