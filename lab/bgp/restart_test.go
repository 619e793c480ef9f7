package bgp

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"labctl/lab/internal/labtest"
)

// TestHelperSpeaker is not a test: TestRestartReconverges runs the test
// binary with it to get a speaker in a process of its own (GoBGP's
// StartBgp writes package globals other speakers of a process read).
func TestHelperSpeaker(t *testing.T) {
	cfgJSON := os.Getenv("LABCTL_BGP_HELPER")
	if cfgJSON == "" {
		t.Skip("helper process only")
	}
	var cfg Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(os.Getenv("LABCTL_BGP_HELPER_PORT"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := run(ctx, &cfg, loKernel(), nil, options{port: port, address: os.Getenv("LABCTL_BGP_HELPER_ADDR")}); err != nil {
		t.Fatal(err)
	}
}

// startHelper runs a speaker in a child process; stop it with SIGTERM.
func startHelper(t *testing.T, cfg *Config, addr string, port int) *exec.Cmd {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSpeaker$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LABCTL_BGP_HELPER="+string(b), "LABCTL_BGP_HELPER_ADDR="+addr,
		"LABCTL_BGP_HELPER_PORT="+strconv.Itoa(port))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopHelper(t, cmd) })
	return cmd
}

func stopHelper(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if cmd.ProcessState != nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("helper speaker: %v", err)
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Errorf("helper speaker did not stop on SIGTERM")
	}
}

// TestRestartReconverges restarts one side of a session again and again.
// The other side holds the failed session idle; left to GoBGP alone, the
// two sides' connection attempts can keep landing in each other's idle
// time for a minute or more (see sessions).
func TestRestartReconverges(t *testing.T) {
	port := labtest.FreePort(t)
	kb := loKernel()
	cfgA := &Config{ASN: 65001, RouterID: "127.0.0.1", Networks: []string{"10.1.0.0/24"}, Timers: fastTimers,
		Neighbors: []*Peer{{Address: "127.0.0.2", ASN: 65002}}}
	b := startSpeaker(t, &Config{ASN: 65002, RouterID: "127.0.0.2", Networks: []string{"10.2.0.0/24"}, Timers: fastTimers,
		Neighbors: []*Peer{{Address: "127.0.0.1", ASN: 65001}}}, kb, "127.0.0.2", port, nil)
	cb := b.client(t)
	a := startHelper(t, cfgA, "127.0.0.1", port)
	waitEstablished(t, cb, "127.0.0.1")
	for i := range 4 {
		stopHelper(t, a)
		waitRoutes(t, kb, "A's network withdrawn")
		// Restarted after a varying pause, so its attempts meet B's idle
		// time at different points.
		time.Sleep(time.Duration(i) * 700 * time.Millisecond)
		start := time.Now()
		a = startHelper(t, cfgA, "127.0.0.1", port)
		labtest.WaitState(t, 10*time.Second, func() (bool, string) {
			st := neighborState(t, cb, "127.0.0.1")
			return st == "established", st
		}, "session back after a restart")
		waitRoutes(t, kb, "A's network back", "10.1.0.0/24 via 127.0.0.1 dev 1")
		t.Logf("restart %d: session and route back %s after A started", i, time.Since(start).Round(10*time.Millisecond))
	}
}
