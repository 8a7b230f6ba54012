package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// The lease and the watchdog. The lease deadline is the send time of the
// last successful renewal plus the TTL etcd returned, so it can only be
// early, never late. Whenever PostgreSQL may accept writes the watchdog is
// armed to that deadline minus the safety margin, and it is re-armed right
// after each successful renewal (not at the end of a loop that may run
// long): only a lease that could really expire fences.
//
// Renewals happen at the start of every loop and, while an action runs,
// every loop_wait from the keeper, so a long checkpoint, crash recovery or
// slow etcd does not use up the lease of a healthy node.

// leaseState is shared by the loop and the keeper.
type leaseState struct {
	// mu is never held across a blocking call.
	mu       sync.Mutex
	deadline time.Time
	// guard: PostgreSQL may accept writes, so the watchdog follows the
	// deadline.
	guard bool
	// unguarded is why the watchdog could not be told ("" when it was).
	unguarded           string
	renewals, renewFail uint64
}

func (a *Agent) leaseLock() *leaseState {
	a.lease.mu.Lock()
	return &a.lease
}

func (a *Agent) leaseUnlock() { a.lease.mu.Unlock() }

// renewLease renews this member's lease once. A lease found expired is not
// replaced here: whatever was bound to it (the leader key) is gone, and the
// watchdog must keep the old deadline; the next loop's renewal grants a new
// lease and the loop decides afresh from what the DCS then says.
func (a *Agent) renewLease(ctx context.Context) error {
	sent := a.d.Clock.Now()
	ttl, err := a.d.DCS.Renew(ctx)
	l := a.leaseLock()
	switch {
	case errors.Is(err, dcs.ErrLeaseExpired):
		l.deadline = time.Time{}
		l.renewFail++
	case err != nil:
		l.renewFail++
	default:
		l.deadline = sent.Add(ttl)
		l.renewals++
	}
	a.leaseUnlock()
	if err != nil {
		a.log.Warn("lease renewal failed", "error", err)
	}
	a.applyGuard()
	return err
}

// keepLease renews the lease every loop_wait until stop is called, for
// the length of an action. It stops at a lease found expired.
func (a *Agent) keepLease() (stop func()) {
	every := a.renewEvery()
	return a.d.Clock.Go(func(ctx context.Context) {
		for a.d.Clock.Sleep(ctx, every) == nil {
			if err := a.renewLease(ctx); errors.Is(err, dcs.ErrLeaseExpired) {
				return
			}
		}
	})
}

// setGuard says whether PostgreSQL may accept writes, and tells the
// watchdog: armed to the lease, or disarmed.
func (a *Agent) setGuard(on bool) {
	l := a.leaseLock()
	l.guard = on
	a.leaseUnlock()
	a.applyGuard()
}

// applyGuard tells the watchdog what the lease state says. With no lease
// (or one already past its margin) while guarding, it is armed to fence at
// once.
func (a *Agent) applyGuard() {
	if a.d.Watchdog == nil {
		return
	}
	l := a.leaseLock()
	guard, deadline := l.guard, l.deadline
	a.leaseUnlock()
	var err error
	if guard {
		at := a.d.Clock.Now()
		if !deadline.IsZero() {
			at = deadline.Add(-a.s.SafetyMargin)
		}
		err = a.d.Watchdog.Arm(at)
	} else {
		err = a.d.Watchdog.Disarm()
	}
	why := ""
	if err != nil {
		why = err.Error()
	}
	l = a.leaseLock()
	changed := l.unguarded != why
	l.unguarded = why
	a.leaseUnlock()
	if changed && why != "" {
		a.log.Error("WATCHDOG UNAVAILABLE: this node cannot be fenced if the agent freezes; it will not become primary", "error", err)
	} else if changed {
		a.log.Info("watchdog available again")
	}
}

// leaseView is the lease deadline and why the node is unguarded.
func (a *Agent) leaseView() (time.Time, string) {
	l := a.leaseLock()
	defer a.leaseUnlock()
	return l.deadline, l.unguarded
}

func (a *Agent) leaseCounters() (renewals, failures uint64) {
	l := a.leaseLock()
	defer a.leaseUnlock()
	return l.renewals, l.renewFail
}
