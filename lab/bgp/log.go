package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// gobgpLogger hands GoBGP's log lines to slog. GoBGP is chatty at info
// (every FSM step), so its info lines become debug ones: the speaker logs
// the state changes that matter itself, one line each.
type gobgpLogger struct {
	log *slog.Logger
	mu  sync.Mutex
	lvl gobgplog.LogLevel
	// fatal receives GoBGP's fatal errors (the API socket cannot be
	// listened on) so the speaker stops with an error instead of GoBGP
	// exiting the process.
	fatal chan<- error
}

func newGobgpLogger(log *slog.Logger, fatal chan<- error) *gobgpLogger {
	lvl := gobgplog.InfoLevel
	if log.Enabled(context.Background(), slog.LevelDebug) {
		lvl = gobgplog.DebugLevel
	}
	return &gobgpLogger{log: log, lvl: lvl, fatal: fatal}
}

func attrs(f gobgplog.Fields) []any {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		v := f[k]
		if e, ok := v.(error); ok {
			v = e.Error()
		}
		out = append(out, k, v)
	}
	return out
}

func (l *gobgpLogger) Panic(msg string, f gobgplog.Fields) {
	l.log.Error("gobgp: "+msg, attrs(f)...)
	panic(fmt.Sprintf("gobgp: %s %v", msg, f))
}

func (l *gobgpLogger) Fatal(msg string, f gobgplog.Fields) {
	l.log.Error("gobgp: "+msg, attrs(f)...)
	select {
	case l.fatal <- fmt.Errorf("gobgp: %s %v", msg, f):
	default:
	}
}

func (l *gobgpLogger) Error(msg string, f gobgplog.Fields) { l.log.Error("gobgp: "+msg, attrs(f)...) }
func (l *gobgpLogger) Warn(msg string, f gobgplog.Fields) {
	if routineWarnings[msg] {
		l.log.Debug("gobgp: "+msg, attrs(f)...)
		return
	}
	l.log.Warn("gobgp: "+msg, attrs(f)...)
}

// routineWarnings are GoBGP warnings about normal events: a connection
// refused while a session is idle, and the path attributes of a shut
// session's Adj-RIB-Out computed for `labctl bgp` (its peer type cleared).
var routineWarnings = map[string]bool{
	"Closed an accepted connection": true,
	"invalid peer type":             true,
}

// Info is debug in labctl: GoBGP reports every FSM step at info. The
// fields are built only when the line will be written.
func (l *gobgpLogger) Info(msg string, f gobgplog.Fields) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug("gobgp: "+msg, attrs(f)...)
	}
}
func (l *gobgpLogger) Debug(msg string, f gobgplog.Fields) {
	if l.GetLevel() >= gobgplog.DebugLevel {
		l.log.Debug("gobgp: "+msg, attrs(f)...)
	}
}

func (l *gobgpLogger) SetLevel(v gobgplog.LogLevel) {
	l.mu.Lock()
	l.lvl = v
	l.mu.Unlock()
}

func (l *gobgpLogger) GetLevel() gobgplog.LogLevel {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lvl
}
