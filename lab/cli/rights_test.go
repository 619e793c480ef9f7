package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"labctl/lab/internal/labtest"
	"labctl/lab/serve"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// rightsLab is a small lab with what order, dig, bgp and orders reach
// for: a certificate authority, two BGP speakers and a PostgreSQL primary
// (name filled in).
const rightsLab = `name: %s
pki: {names: [www.shop.example]}
nodes:
  r1:
    kind: router
    interfaces:
      eth0: {addresses: [10.9.0.1/30]}
      db: {addresses: [10.9.1.1/24]}
    bgp:
      asn: 65001
      networks: [10.9.1.0/24]
      neighbors: [{address: 10.9.0.2, asn: 65002}]
  r2:
    kind: router
    interfaces: {eth0: {addresses: [10.9.0.2/30]}}
    bgp:
      asn: 65002
      neighbors: [{address: 10.9.0.1, asn: 65001}]
  db:
    kind: host
    interfaces: {eth0: {addresses: [10.9.1.10/24]}}
    routes: [{to: default, via: 10.9.1.1}]
    dns: {nameservers: [10.9.1.1]}
shop:
  database: {primary: db}
links:
  - endpoints: [r1:eth0, r2:eth0]
  - endpoints: [db:eth0, r1:db]
`

func writeRightsLab(t *testing.T, name string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(rightsLab, name)), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestOrdersDatabaseDown: orders against a lab whose database is not
// running says it is unreachable, with its address and the real error, at
// once: not "no shop schema" after waiting. (No root needed: the lab is
// only a record in a state directory of the test's own.)
func TestOrdersDatabaseDown(t *testing.T) {
	old := state.Root
	state.Root = t.TempDir()
	t.Cleanup(func() { state.Root = old })
	tp, err := topology.Load(writeRightsLab(t, "tdbdown"))
	if err != nil {
		t.Fatal(err)
	}
	if err := state.Save(&state.Lab{Name: tp.Name, Status: "up", Topology: tp}); err != nil {
		t.Fatal(err)
	}
	sock := serve.PostgresSocketDir(state.DataDir(tp.Name, "db", "postgres"))

	// Never started: no socket directory.
	code, _, errs := run(t, "orders", "--lab", tp.Name)
	if code != 1 || !strings.Contains(errs, "unreachable") || !strings.Contains(errs, "not started") || strings.Contains(errs, "schema") {
		t.Errorf("database never started: exit %d: %s", code, errs)
	}

	// Stopped: its socket directory is there, the socket is not.
	if err := os.MkdirAll(sock, 0o700); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, _, errs = run(t, "orders", "--lab", tp.Name)
	took := time.Since(start)
	for _, want := range []string{"db: store: database shop at " + sock + ":5432 is unreachable", "no such file or directory"} {
		if code != 1 || !strings.Contains(errs, want) {
			t.Errorf("database down: exit %d, %q lacks %q", code, errs, want)
		}
	}
	if strings.Contains(errs, "schema") {
		t.Errorf("database down reported as a schema problem: %s", errs)
	}
	if took > 4*time.Second {
		t.Errorf("orders took %v against a database that is down", took)
	}
}

// TestRootVerbsAsAnotherUser runs the built labctl as nobody: order, dig
// and bgp say at once that they need root, for a lab that is not up and
// for one that is (with BGP, where they used to wait 30 s for a
// convergence they could not see); orders says so with the real refusal
// behind it, where it used to wait and say "no shop schema". As root the
// same lab answers, and a cut link's session is not waited for.
func TestRootVerbsAsAnotherUser(t *testing.T) {
	labtest.NeedRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv not installed")
	}
	// nobody must be able to run the binary: a directory it may enter.
	dir, err := os.MkdirTemp("", "labctl-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := labtest.BuildLabctl(t, dir)
	type result struct {
		code     int
		out, err string
		took     time.Duration
	}
	runAs := func(nobody bool, args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		argv := append([]string{bin}, args...)
		if nobody {
			argv = append([]string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"}, argv...)
		}
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Dir = "/"
		var out, errw strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errw
		start := time.Now()
		err := cmd.Run()
		r := result{out: out.String(), err: errw.String(), took: time.Since(start)}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return r
	}
	const quick = 10 * time.Second // well under the 30 s wait for BGP
	wantRoot := func(what string, r result, verb string) {
		t.Helper()
		if r.code != 1 || !strings.Contains(r.err, verb+" needs root") || !strings.Contains(r.err, "run it with sudo") {
			t.Errorf("%s: exit %d, stderr %q; want %s needs root", what, r.code, r.err, verb)
		}
		if r.took > quick {
			t.Errorf("%s took %v", what, r.took)
		}
		t.Logf("%s: %v", what, r.took.Round(time.Millisecond))
	}

	lab := labtest.LabName("nr")
	for _, c := range []struct {
		verb string
		args []string
	}{
		{"order", []string{"order", "--lab", lab, "--from", "db"}},
		{"dig", []string{"dig", "--lab", lab, "db", "www.shop.example"}},
		{"bgp", []string{"bgp", "--lab", lab, "--wait", "30s"}},
	} {
		wantRoot(c.verb+" with the lab not up", runAs(true, c.args...), c.verb)
	}

	t.Cleanup(func() { exec.Command(bin, "down", lab).Run() })
	if r := runAs(false, "up", "-t", writeRightsLab(t, lab)); r.code != 0 {
		t.Fatalf("up: exit %d\n%s%s", r.code, r.out, r.err)
	}
	for _, c := range []struct {
		verb string
		args []string
	}{
		{"order", []string{"order", "--lab", lab, "--from", "db"}},
		{"order", []string{"order", "--lab", lab, "--from", "db", "--format", "json"}},
		{"dig", []string{"dig", "--lab", lab, "db", "www.shop.example"}},
		{"bgp", []string{"bgp", "--lab", lab, "--wait", "30s"}},
	} {
		wantRoot(strings.Join(c.args, " ")+" with the lab up", runAs(true, c.args...), c.verb)
	}
	// status works for anyone: it says drift was not checked, and sees
	// the watcher it may not fully inspect.
	if r := runAs(true, "status"); r.code != 0 || !strings.Contains(r.out, lab+"  drift not checked") ||
		strings.Contains(r.out, "watcher not running") || strings.Contains(r.out, "drift unknown") {
		t.Errorf("status as nobody: exit %d\n%s%s", r.code, r.out, r.err)
	}
	r := runAs(true, "orders", "--lab", lab)
	wantRoot("orders with the lab up", r, "orders")
	t.Logf("orders as nobody: %s", r.err)
	if !strings.Contains(r.err, "no rights") || !strings.Contains(r.err, "permission denied") || strings.Contains(r.err, "schema") {
		t.Errorf("orders as nobody: %q; want the refusal, not a schema", r.err)
	}

	// Root reads the same database, once its setup has made the shop's
	// role and schema (the service is ready when it accepts connections):
	// until then the role is refused or the schema missing.
	for deadline := time.Now().Add(20 * time.Second); ; {
		r := runAs(false, "orders", "--lab", lab, "--format", "json")
		if r.code == 0 && strings.Contains(r.out, `"total_orders": 0`) {
			break
		}
		setup := strings.Contains(r.err, "no shop schema") || strings.Contains(r.err, `role \"shop\" does not exist`)
		if !setup || time.Now().After(deadline) {
			t.Fatalf("orders as root: exit %d\n%s%s", r.code, r.out, r.err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A cut link's session is expected down: bgp --wait does not wait for
	// it, and says it is cut.
	if r := runAs(false, "bgp", "--lab", lab, "--wait", "20s"); r.code != 0 {
		t.Fatalf("bgp --wait before the cut: exit %d\n%s%s", r.code, r.out, r.err)
	}
	if r := runAs(false, "link", "down", "--lab", lab, "r1", "r2"); r.code != 0 {
		t.Fatalf("link down: exit %d\n%s%s", r.code, r.out, r.err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := runAs(false, "bgp", "--lab", lab, "r1", "neighbors", "--format", "json")
		var sp []struct {
			Neighbors []struct{ State string } `json:"neighbors"`
		}
		if r.code == 0 && json.Unmarshal([]byte(r.out), &sp) == nil && len(sp) == 1 && len(sp[0].Neighbors) == 1 && sp[0].Neighbors[0].State != "established" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session over the cut link stays established: %s%s", r.out, r.err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r = runAs(false, "bgp", "--lab", lab, "--wait", "5s")
	if r.code != 0 || !strings.Contains(r.out, "converged in") || !strings.Contains(r.out, "0/1 (1 cut)") {
		t.Errorf("bgp --wait with r1-r2 cut: exit %d (%v)\n%s%s", r.code, r.took, r.out, r.err)
	}
}
