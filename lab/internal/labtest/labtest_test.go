package labtest

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestWaitFor(t *testing.T) {
	n := 0
	took := WaitEvery(t, time.Second, time.Millisecond, func() bool { n++; return n == 3 }, "third call")
	if n != 3 || took > time.Second {
		t.Fatalf("%d calls, %v", n, took)
	}
	seen := ""
	WaitState(t, time.Second, func() (bool, string) { seen += "x"; return len(seen) == 2, seen }, "second call")
	if seen != "xx" {
		t.Fatalf("WaitState called cond %d times", len(seen))
	}
}

func TestFreePort(t *testing.T) {
	p := FreePort(t)
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("port %d not free: %v", p, err)
	}
	ln.Close()
	if a := FreeAddr(t); !strings.HasPrefix(a, "127.0.0.1:") {
		t.Fatalf("FreeAddr: %s", a)
	}
}

func TestNames(t *testing.T) {
	pid := os.Getpid()
	if got, want := LabName("x"), "tx"+strconv.Itoa(pid%100000); got != want {
		t.Errorf("LabName: %s, want %s", got, want)
	}
	if got, want := TempName("a-b"), "a-b-"+strconv.Itoa(pid); got != want {
		t.Errorf("TempName: %s, want %s", got, want)
	}
}
