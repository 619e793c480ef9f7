package engine_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"labctl/lab/engine"
	"labctl/lab/internal/labtest"
	"labctl/lab/netns"
	"labctl/lab/service"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// restartTmpl is one host with an echo server (the default policy), one
// that is never restarted, and one that, once FLAG exists, dies at once
// every time it starts.
const restartTmpl = `name: %s
nodes:
  h:
    kind: host
    services:
      echo:
        command: [labctl, serve, echo, --listen, ":7"]
        ready: {tcp: 7, timeout: 5s}
      once:
        command: [labctl, serve, echo, --listen, ":8"]
        ready: {tcp: 8, timeout: 5s}
        restart: never
      crash:
        command: [sh, -c, "while [ ! -e %s ]; do sleep 0.05; done; exit 3"]
        max-restarts: 2
`

func restartLab(t *testing.T, lab, flag string) *topology.Topology {
	t.Helper()
	tp, err := topology.Parse([]byte(fmt.Sprintf(restartTmpl, lab, flag)), lab+".yaml")
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func record(t *testing.T, lab, node, svc string) service.Record {
	t.Helper()
	sup := &service.Supervisor{Dir: state.ServiceDir(lab), Proc: service.OSProc{}}
	recs, err := sup.Records()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Node == node && r.Service == svc {
			return r
		}
	}
	t.Fatalf("no record of %s/%s", node, svc)
	return service.Record{}
}

func alive(r service.Record) bool { return service.OSProc{}.Alive(r.PID, r.Start) }

// dialIn connects to port inside the lab's node h.
func dialIn(lab string, port int) error {
	return netns.Do(topology.Namespace(lab, "h"), func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func labStatus(t *testing.T, e *engine.Engine, lab string) engine.LabStatus {
	t.Helper()
	st, err := e.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Name == lab {
			return s
		}
	}
	t.Fatalf("status lists no lab %s", lab)
	return engine.LabStatus{}
}

// processesOf lists the PIDs running node/svc of lab (by the environment
// the supervisor gives them).
func processesOf(lab, node, svc string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		env := strings.Split(string(b), "\x00")
		if slices.Contains(env, "LABCTL_LAB="+lab) && slices.Contains(env, "LABCTL_NODE="+node) && slices.Contains(env, "LABCTL_SERVICE="+svc) &&
			(service.OSProc{}).Alive(pid, 0) {
			out = append(out, pid)
		}
	}
	return out
}

func TestRestarts(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	lab := labtest.LabName("rs")
	flag := filepath.Join(t.TempDir(), "crash-now")
	tp := restartLab(t, lab, flag)
	e, downed := upForTest(t, tp)

	w, ok := engine.Watcher(lab)
	if !ok {
		t.Fatalf("no watcher runs after up (record %+v)", w)
	}

	// kill -9 of a service: it comes back, answers, and status counts it.
	first := record(t, lab, "h", "echo")
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, 15*time.Second, func() bool {
		r := record(t, lab, "h", "echo")
		return r.PID != first.PID && alive(r) && dialIn(lab, 7) == nil
	}, "echo to come back")
	echo := record(t, lab, "h", "echo")
	if echo.Restarts != 1 || !strings.Contains(echo.LastExit, "killed by SIGKILL") {
		t.Errorf("echo after one kill: restarts %d, last exit %q", echo.Restarts, echo.LastExit)
	}
	if st := labStatus(t, e, lab); st.Restarts != 1 || len(st.Failed) != 0 || !st.Watching || !st.Healthy {
		t.Errorf("status after one restart: %+v", st)
	}
	out, err := exec.Command(labctlBin, "logs", "--lab", lab, "h", "echo").CombinedOutput()
	if want := fmt.Sprintf("labctl: restart 1 after exit: pid %d killed by SIGKILL", first.PID); err != nil || !strings.Contains(string(out), want) {
		t.Errorf("labctl logs h echo (%v) lacks %q:\n%s", err, want, out)
	}

	// restart: never stays dead.
	once := record(t, lab, "h", "once")
	if err := syscall.Kill(once.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, 15*time.Second, func() bool {
		return record(t, lab, "h", "once").State == service.StateExited
	}, "the watcher to settle once")
	if r := record(t, lab, "h", "once"); r.PID != once.PID || r.Restarts != 0 || alive(r) || len(processesOf(lab, "h", "once")) != 0 || dialIn(lab, 8) == nil {
		t.Errorf("a restart: never service came back: %+v", r)
	}

	// A service that dies at once every time: max-restarts (2) restarts,
	// then failed.
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, 30*time.Second, func() bool {
		return record(t, lab, "h", "crash").State == service.StateFailed
	}, "crash to be marked failed")
	crash := record(t, lab, "h", "crash")
	if crash.Restarts != 2 || alive(crash) || len(processesOf(lab, "h", "crash")) != 0 || !strings.Contains(crash.LastExit, "exited with status 3") {
		t.Errorf("failed crash: %+v", crash)
	}
	if st := labStatus(t, e, lab); st.Restarts != 3 || !slices.Equal(st.Failed, []string{"h/crash"}) || st.Healthy {
		t.Errorf("status with crash failed: %+v", st)
	}

	// A killed watcher: up starts another and, converging, the dead
	// services as it always did (their restart count starts again).
	if err := syscall.Kill(w.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, 5*time.Second, func() bool { _, ok := engine.Watcher(lab); return !ok }, "the watcher to die")
	os.Remove(flag)
	if _, err := e.Up(context.Background(), tp); err != nil {
		t.Fatal(err)
	}
	w2, ok := engine.Watcher(lab)
	labtest.WaitFor(t, 5*time.Second, func() bool { w2, ok = engine.Watcher(lab); return ok }, "up to start a new watcher")
	if w2.PID == w.PID {
		t.Errorf("watcher pid %d is the killed one", w2.PID)
	}
	for _, svc := range []string{"once", "crash"} {
		if r := record(t, lab, "h", svc); !alive(r) || r.State != "" || r.Restarts != 0 {
			t.Errorf("%s after up: %+v", svc, r)
		}
	}
	if st := labStatus(t, e, lab); !st.Healthy || len(st.Failed) != 0 {
		t.Errorf("status after up: %+v", st)
	}

	// A converge that changes a service stops and starts it once: the
	// watcher does not bring the stopped process back.
	before := record(t, lab, "h", "echo")
	tp.Nodes["h"].Services["echo"].Env = map[string]string{"CHANGED": "1"}
	if _, err := e.Up(context.Background(), tp); err != nil {
		t.Fatal(err)
	}
	after := record(t, lab, "h", "echo")
	if after.PID == before.PID || after.Restarts != 0 || alive(before) {
		t.Errorf("changed echo: before %+v after %+v", before, after)
	}
	if got := processesOf(lab, "h", "echo"); !slices.Equal(got, []int{after.PID}) {
		t.Errorf("echo processes %v, want only %d", got, after.PID)
	}

	// SIGTERM makes the daemon exit with status 0: on-failure keeps it down.
	if err := syscall.Kill(after.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, 15*time.Second, func() bool {
		return record(t, lab, "h", "echo").State != ""
	}, "the watcher to settle echo")
	if r := record(t, lab, "h", "echo"); r.State != service.StateExited || r.PID != after.PID || !strings.Contains(r.LastExit, "exited with status 0") || len(processesOf(lab, "h", "echo")) != 0 {
		t.Errorf("echo after SIGTERM: %+v", r)
	}

	// down ends a watcher whose record is lost (found by its command line
	// and LABCTL_LAB in /proc), and leaves no process.
	w3, ok := engine.Watcher(lab)
	if !ok {
		t.Fatal("no watcher before down")
	}
	if err := os.Remove(filepath.Join(state.Dir(lab), "supervise.json")); err != nil {
		t.Fatal(err)
	}
	*downed = true
	downClean(t, e, lab, "after the restarts")
	if (service.OSProc{}).Alive(w3.PID, w3.Start) {
		t.Errorf("watcher %d, its record lost, outlived down", w3.PID)
	}
}

// down ends a live watcher too, and right after it nothing of the lab runs.
func TestDownEndsWatcher(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	lab := labtest.LabName("rw")
	e, downed := upForTest(t, restartLab(t, lab, filepath.Join(t.TempDir(), "never")))
	w, ok := engine.Watcher(lab)
	if !ok {
		t.Fatal("no watcher after up")
	}
	*downed = true
	downClean(t, e, lab, "with the watcher running")
	if (service.OSProc{}).Alive(w.PID, w.Start) {
		t.Errorf("watcher %d outlived down", w.PID)
	}
}
