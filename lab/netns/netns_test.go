package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"labctl/lab/internal/labtest"
)

func threadNS() (NsID, error) { return statID("/proc/thread-self/ns/net") }

func TestCreateDoKillDelete(t *testing.T) {
	labtest.NeedRoot(t)
	name := labtest.TempName("netnstest")
	t.Cleanup(func() { Delete(name) })
	root, err := statID("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if err := Create(name); err != nil {
		t.Fatal(err)
	}
	if err := Create(name); !errors.Is(err, ErrExist) {
		t.Fatalf("second Create: %v", err)
	}
	id, err := ID(name)
	if err != nil || id == root {
		t.Fatalf("ID %v (root %v): %v", id, root, err)
	}
	// Do runs inside the namespace, and the caller's thread is untouched.
	var inside NsID
	if err := Do(name, func() (err error) { inside, err = threadNS(); return }); err != nil || inside != id {
		t.Fatalf("Do ran in %v, want %v (%v)", inside, id, err)
	}
	if now, _ := threadNS(); now != root {
		t.Fatalf("caller left in %v", now)
	}
	// Temp runs in a namespace that is neither root nor the named one.
	if err := Temp(func() error {
		x, _ := threadNS()
		if x == root || x == id {
			return fmt.Errorf("Temp ran in %v", x)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Kill finds a process by its namespace and ends it, even one that
	// ignores SIGTERM.
	sleeper := exec.Command("ip", "netns", "exec", name, "sh", "-c", "trap '' TERM; sleep 30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { sleeper.Wait(); close(done) }()
	time.Sleep(100 * time.Millisecond)
	pids, err := Pids(map[NsID]bool{id: true})
	if err != nil || len(pids[id]) == 0 {
		t.Fatalf("Pids found %v (%v)", pids, err)
	}
	if err := Kill([]string{name}, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("process in the namespace survived Kill")
	}

	if err := Delete(name); err != nil {
		t.Fatal(err)
	}
	if Exists(name) {
		t.Fatal("namespace still mounted after Delete")
	}
	if _, err := os.Stat(Path(name)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("mount point left: %v", err)
	}
	if err := Delete(name); err != nil {
		t.Fatalf("Delete of a missing namespace: %v", err)
	}
	if _, err := Open(name); !errors.Is(err, ErrNotExist) {
		t.Fatalf("Open of a missing namespace: %v", err)
	}
}

func TestIDRefusesPlainFile(t *testing.T) {
	labtest.NeedRoot(t)
	name := labtest.TempName("netnstest-plain")
	if err := prepare(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(Path(name), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(Path(name))
	// A leftover file from a crash between create and mount is no namespace.
	if _, err := ID(name); !errors.Is(err, ErrNotExist) {
		t.Fatalf("ID of a plain file: %v", err)
	}
	// Create takes the leftover's place.
	if err := Create(name); err != nil {
		t.Fatalf("Create over a leftover file: %v", err)
	}
	if !Exists(name) {
		t.Fatal("not a namespace after Create")
	}
	if err := Delete(name); err != nil {
		t.Fatal(err)
	}
}
