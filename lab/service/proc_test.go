package service_test

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"labctl/lab/service"
)

// zombieLeaderEnv makes the test binary, run as a child, end only its
// main thread.
const zombieLeaderEnv = "LABCTL_TEST_ZOMBIE_LEADER"

// In the child, init runs on the main thread (the thread-group leader);
// locking it keeps it there. Another goroutine keeps a second thread busy
// and the main thread ends with the raw exit syscall (not exit_group):
// the leader becomes a zombie while the process lives on, the state /proc
// shows for a multithreaded program that calls execve from another thread
// (as `labctl serve ovsdb` does) until the kernel hands that thread the
// leader's PID.
func init() {
	if os.Getenv(zombieLeaderEnv) == "" {
		return
	}
	runtime.LockOSThread()
	started := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never the main thread, which is locked
		close(started)
		for {
			time.Sleep(time.Hour)
		}
	}()
	<-started
	os.Stdout.WriteString("ready\n")
	syscall.RawSyscall(syscall.SYS_EXIT, 0, 0, 0)
}

// stat returns the state letter and the thread count of /proc/PID/stat.
func stat(t *testing.T, pid int) (state string, threads int) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
	n, err := strconv.Atoi(f[17]) // field 20: num_threads
	if err != nil {
		t.Fatal(err)
	}
	return f[0], n
}

// TestAliveZombieLeader: a process whose thread-group leader is a zombie
// but which still has a running thread is alive; once every thread is
// gone it is not, before and after it is reaped.
func TestAliveZombieLeader(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), zombieLeaderEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer cmd.Process.Kill()
	start, err := service.OSProc{}.StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	// The leader is a zombie once its exit syscall has run, an instant
	// after "ready"; wait for that, with a bound only for a broken child.
	var state string
	var threads int
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if state, threads = stat(t, pid); state == "Z" || time.Now().After(end) {
			break
		}
	}
	if state != "Z" || threads < 2 {
		t.Fatalf("precondition: child %d is in state %s with %d threads, want a zombie leader (Z) with live threads", pid, state, threads)
	}
	if !(service.OSProc{}).Alive(pid, start) {
		t.Errorf("Alive(%d) = false for a process with a zombie leader and %d live threads", pid, threads)
	}
	if (service.OSProc{}).Alive(pid, start+1) {
		t.Errorf("Alive(%d) = true for another incarnation's start time", pid)
	}

	// Every thread gone, not yet reaped: a zombie with nothing alive.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if state, _ := stat(t, pid); state != "Z" {
		t.Fatalf("precondition: the killed, unreaped child is in state %s, want Z", state)
	}
	if (service.OSProc{}).Alive(pid, start) {
		t.Errorf("Alive(%d) = true for a killed process, not yet reaped", pid)
	}
	cmd.Wait()
	if (service.OSProc{}).Alive(pid, start) {
		t.Errorf("Alive(%d) = true for a reaped process", pid)
	}
}
