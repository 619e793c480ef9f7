package engine

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"labctl/lab/links"
	"labctl/lab/netns"
	"labctl/lab/state"
)

// Down removes everything a lab made: it ends every process in the lab's
// namespaces (by PID), deletes the namespaces (and with them every link),
// the /etc/netns files it wrote and its state. It needs no topology file,
// works after a crash at any point of up, treats "not found" as done,
// keeps going on errors and returns them together. It touches nothing
// without the lab's mark or record.
func (e *Engine) Down(ctx context.Context, lab string) error {
	unlock, err := state.Lock(lab)
	if err != nil {
		return err
	}
	defer unlock()
	t0 := time.Now()
	rec, err := state.Load(lab)
	if err != nil && !errors.Is(err, state.ErrNoLab) {
		e.report(Event{Lab: lab, Status: "info", Message: fmt.Sprintf("state unreadable (%v); finding the lab by its marks", err)})
		rec = nil
	}
	nss := e.ownedNamespaces(lab, rec)
	var errs []error

	// The watcher first, so that nothing restarts what is stopped next
	// (it acts only under the lab's lock, held here, but it must not
	// outlive the lab); then services, politely, then everything else in
	// the namespaces.
	if err := stopWatcher(lab); err != nil {
		errs = append(errs, err)
	}
	sup := e.Supervisor(lab)
	recs, _ := sup.Records()
	errs = append(errs, e.each(context.WithoutCancel(ctx), len(recs), func(i int) error {
		if err := sup.Stop(recs[i].Node, recs[i].Service); err != nil {
			return fmt.Errorf("stop %s: %w", recs[i].Key(), err)
		}
		return nil
	})...)
	if err := netns.Kill(nss, links.KillGrace); err != nil {
		errs = append(errs, err)
	}
	e.report(Event{Lab: lab, Phase: "stop processes", Status: status(errs), Steps: len(recs), Elapsed: time.Since(t0)})

	t1 := time.Now()
	errs = append(errs, e.each(context.WithoutCancel(ctx), len(nss), func(i int) error {
		return errors.Join(netns.Delete(nss[i]), links.RemoveEtc(nss[i]))
	})...)
	e.report(Event{Lab: lab, Phase: "namespaces", Status: status(errs), Steps: len(nss), Elapsed: time.Since(t1)})

	if len(errs) == 0 {
		if err := state.Remove(lab); err != nil {
			errs = append(errs, err)
		}
	} else if rec != nil {
		// Keep the record so the next down can finish the job.
		rec.Status = "failed"
		state.Save(rec)
	}
	return joinSorted(errs)
}

// DownAll removes every lab: those with state and those found only by the
// marks on their namespaces.
func (e *Engine) DownAll(ctx context.Context) error {
	labs, err := Labs()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range labs {
		if err := e.Down(ctx, l); err != nil {
			errs = append(errs, fmt.Errorf("lab %s: %w", l, err))
		}
	}
	return errors.Join(errs...)
}

// Labs lists every lab present: with state, or marked namespaces only.
func Labs() ([]string, error) {
	set := map[string]bool{}
	names, err := state.List()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		set[n] = true
	}
	nss, _ := netns.List()
	for _, ns := range nss {
		for _, l := range links.LabMarks(ns) {
			if strings.HasPrefix(ns, l+"-") {
				set[l] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for l := range set {
		out = append(out, l)
	}
	sort.Strings(out)
	return out, nil
}

func status(errs []error) string {
	if len(errs) > 0 {
		return "fail"
	}
	return "ok"
}
