package service

import (
	"syscall"
	"testing"
	"time"
)

// An end seen before a process started belongs to an earlier process with
// the same PID: it says nothing of how this one ended.
func TestExitOfAReusedPID(t *testing.T) {
	m := &ExitMonitor{track: map[int]bool{}, exits: map[int]syscall.WaitStatus{}, recent: map[int]exitSeen{}, wake: make(chan struct{}, 1)}
	m.ended(4242, 0) // an unrelated process, exit 0
	time.Sleep(time.Millisecond)
	started := time.Now()
	if _, ok := m.Exit(4242, started); ok {
		t.Fatal("the earlier process's exit was reported for the one started after it")
	}
	m.ended(4242, syscall.WaitStatus(syscall.SIGKILL)) // this one, killed
	if ws, ok := m.Exit(4242, started); !ok || !ws.Signaled() {
		t.Fatalf("its own end: %v %v, want killed", ws, ok)
	}
}
