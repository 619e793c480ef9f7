package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"labctl/lab/plan"
)

// TestPlanDefaultOutsideRepo: without -t, plan finds the default lab from
// any directory (it used to fail with "open topologies/double11.yaml"),
// and says it read the copy built into labctl; in the repository it reads
// the file on disk.
func TestPlanDefaultOutsideRepo(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("LABCTL_TOPOLOGY", "")
	for _, c := range []struct{ dir, file string }{
		{t.TempDir(), EmbeddedTopology},
		{repo, DefaultTopology},
	} {
		t.Chdir(c.dir)
		code, out, errs := run(t, "plan", "--format", "json")
		if code != 0 {
			t.Fatalf("in %s: exit %d: %s", c.dir, code, errs)
		}
		var p plan.Plan
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatal(err)
		}
		if p.Lab != "double11" || p.File != c.file || p.Nodes < 40 || len(p.Steps) == 0 {
			t.Errorf("in %s: plan of lab %q from %q, %d nodes, %d steps; want double11 from %q", c.dir, p.Lab, p.File, p.Nodes, len(p.Steps), c.file)
		}
	}
	t.Chdir(t.TempDir())
	if code, out, errs := run(t, "plan"); code != 0 || !strings.HasPrefix(out, "# from "+EmbeddedTopology+"\n") {
		t.Errorf("text plan outside the repository: exit %d, %s\n%.200s", code, errs, out)
	}
}

// TestPlanNamesCommands: plan lists the services that run the file's own
// commands, and none of labctl's serve daemons or the Open vSwitch daemons
// labctl adds.
func TestPlanNamesCommands(t *testing.T) {
	code, out, errs := run(t, "plan", "-t", "../topology/testdata/good/services.yaml")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	_, list, ok := strings.Cut(out, "  ! 3 service(s) run commands from the file as root")
	_, list, _ = strings.Cut(list, "\n")
	want := "      app/worker: sleep infinity\n      db/redis: redis-server --port 6379\n      db/seed: sh -c redis-cli set k v && touch /run/seeded\n"
	if !ok || list != want {
		t.Errorf("plan's list of commands:\n%s\nwant:\n%s", list, want)
	}
	for _, f := range []string{"sample.yaml", "region.yaml", "internet.yaml", "double11.yaml"} {
		code, out, errs = run(t, "plan", "-t", "../../topologies/"+f)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", f, code, errs)
		}
		if strings.Contains(out, " ! ") {
			t.Errorf("%s runs only labctl's daemons, but plan lists:\n%s", f, out[strings.Index(out, " ! "):])
		}
	}
}

// TestPlanJSONNamesCommands: plan --format json carries the same list as
// the text, as a commands field (empty, not missing, for a file that runs
// only labctl's daemons), beside the plan's own fields.
func TestPlanJSONNamesCommands(t *testing.T) {
	for _, c := range []struct {
		file string
		want []CommandService
	}{
		{"../topology/testdata/good/services.yaml", []CommandService{
			{Node: "app", Service: "worker", Command: []string{"sleep", "infinity"}},
			{Node: "db", Service: "redis", Command: []string{"redis-server", "--port", "6379"}},
			{Node: "db", Service: "seed", Command: []string{"sh", "-c", "redis-cli set k v && touch /run/seeded"}},
		}},
		{sampleFile, []CommandService{}},
	} {
		code, out, errs := run(t, "plan", "-t", c.file, "--format", "json")
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", c.file, code, errs)
		}
		var got struct {
			plan.Plan
			Commands []CommandService `json:"commands"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if !reflect.DeepEqual(got.Commands, c.want) || got.Lab == "" || len(got.Steps) == 0 {
			t.Errorf("%s: commands %+v (lab %q, %d steps), want %+v", c.file, got.Commands, got.Lab, len(got.Steps), c.want)
		}
		if !strings.Contains(out, `"commands": [`) {
			t.Errorf("%s: no commands list in:\n%.300s", c.file, out)
		}
	}
}

// TestSignalStopsPlan: SIGTERM while plan reads a large file ends it with
// a non-zero exit that names the signal (it used to be ignored for minutes).
func TestSignalStopsPlan(t *testing.T) {
	var b strings.Builder
	b.WriteString("name: many\nnodes:\n")
	for i := 0; i < 40000; i++ {
		fmt.Fprintf(&b, "  h%d: {kind: host}\n", i)
	}
	file := filepath.Join(t.TempDir(), "many.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-ctx.Done()
	var out, errw strings.Builder
	code := Main(ctx, []string{"plan", "-t", file, "--max-nodes", "40000"}, &out, &errw)
	if code == 0 || !strings.Contains(errw.String(), "terminated signal received, stopped: reading "+file+": context canceled") {
		t.Errorf("exit %d, stderr %q", code, errw.String())
	}
}
