package agent

import (
	"context"
	"errors"
	"fmt"
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
// Renewals come from the keeper, one every loop_wait (send to send) for the
// life of the agent process, whatever the loop is doing: a long checkpoint,
// crash recovery, a status query waiting out its timeout, slow etcd calls
// or the sleep between two loops do not use up the lease of a node whose
// agent lives. A frozen agent (SIGSTOP) stops its keeper too, and then the
// watchdog fences. A loop that stops making progress while PostgreSQL may
// accept writes (a call stuck past every deadline) stops the keeper after
// hangBound, so it is fenced too rather than holding the key for ever.

// leaseState is shared by the loop and the keeper.
type leaseState struct {
	// mu is never held across a blocking call.
	mu       sync.Mutex
	deadline time.Time
	// guard: PostgreSQL may accept writes, so the watchdog follows the
	// deadline. keepOnExit: the end of the agent does not fence (paused).
	guard, keepOnExit bool
	// unguarded is why the watchdog could not be told ("" when it was).
	unguarded string
	// renewErr is why the last renewal failed for want of etcd (nil: it
	// succeeded, or etcd answered that the lease expired).
	renewErr            error
	renewals, renewFail uint64
	// granted is the TTL etcd gave the current lease (0: none yet);
	// asked the ttl it was made for. A dynamic ttl other than asked
	// moves the lease (keepLease).
	granted, asked time.Duration
	// moveErr is why the last move failed ("" when it did not).
	moveErr string
	// progress is when the loop last showed it is not stuck.
	progress time.Time
	// keeping: the keeper runs.
	keeping bool
	// failsafe: the last failsafe round was confirmed by every member;
	// failsafeRounds counts those. failsafeHold: this member confirmed a
	// leader and takes no key before then.
	failsafe       bool
	failsafeRounds uint64
	failsafeHold   time.Time
	// startBy is where the watchdog is armed, before this process has any
	// lease, when PostgreSQL already ran writable at its start (zero once
	// the first step is done).
	startBy time.Time
}

// hangBound is how long the loop may make no progress while PostgreSQL
// may accept writes before the keeper stops renewing. Crash recovery and
// restarts run inside one step, so it is long.
const hangBound = 5 * time.Minute

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
	a.noteRenewal(sent, ttl, err)
	if err != nil {
		a.log.Warn("lease renewal failed", "error", err)
	}
	return err
}

// noteRenewal records a renewal (or a lease move) sent at sent, and tells
// the watchdog.
func (a *Agent) noteRenewal(sent time.Time, ttl time.Duration, err error) {
	l := a.leaseLock()
	switch {
	case errors.Is(err, dcs.ErrLeaseExpired) && l.failsafe && sent.Before(l.deadline):
		// Expired while etcd was away, but every member confirmed this
		// leader within ttl and none takes the key before its hold ends:
		// the round's deadline stands while the loop takes the key again
		// under a new lease.
		l.renewFail++
		l.renewErr = nil
	case errors.Is(err, dcs.ErrLeaseExpired):
		l.deadline = time.Time{}
		l.renewFail++
		l.renewErr = nil
	case err != nil:
		l.renewFail++
		l.renewErr = err
	default:
		l.renewErr = nil
		l.deadline = sent.Add(ttl)
		l.granted = ttl
		l.renewals++
		l.failsafe = false
	}
	a.leaseUnlock()
	a.applyGuard()
}

// keepLease renews the lease, or, when the dynamic ttl is not the one the
// lease was made for, moves this member's keys onto a new lease of that
// ttl (the move renews them too). etcd fixes a lease's TTL when it grants
// it: a new lease is the only way to change it.
func (a *Agent) keepLease(ctx context.Context) error {
	dyn := a.dynSnap.Load()
	want := dyn.TTL.D()
	// PATCH /config checks the margin of the member it reached only: a ttl
	// that leaves this member's watchdog no room between two renewals would
	// have it fence its own healthy primary. The lease stays at the ttl it
	// has; the refusal is logged once. (A margin of 0 refuses no validated
	// configuration: ttl > loop_wait + retry_timeout is a rule of its own.)
	if err := dyn.CheckMargin(a.s.SafetyMargin); err != nil {
		a.noteMove(fmt.Errorf("this member's watchdog.safety_margin: %w", err),
			"not moving the lease to the new ttl: keeping the current one", "ttl", want)
		return a.renewLease(ctx)
	}
	l := a.leaseLock()
	if l.granted != 0 && l.asked != want && (l.granted == want || l.granted == leaseSeconds(want)) {
		// The lease already has it (the first one of this process, or
		// one granted after an expiry).
		l.asked = want
	}
	move := l.granted != 0 && l.asked != want
	a.leaseUnlock()
	if !move {
		a.noteMove(nil, "") // no move pending: nothing failing to report
		return a.renewLease(ctx)
	}
	err := a.moveLease(ctx, want)
	if notMoved(err) {
		// Nothing moved: the current lease still needs this round's
		// renewal. The move is tried again next round.
		return a.renewLease(ctx)
	}
	return err
}

// notMoved: a lease move failed with the keys left on the current lease,
// which this round's renewal keeps alive (a refused grant, a key changed
// meanwhile, a lock on the lease). A move that could not even reach etcd,
// or whose answer was lost, is a failed renewal.
func notMoved(err error) bool {
	return errors.Is(err, dcs.ErrKeyModified) || errors.Is(err, dcs.ErrLeaseInUse) || errors.Is(err, dcs.ErrNotMoved)
}

// leaseSeconds is the TTL etcd grants for ttl: whole seconds, rounded up.
func leaseSeconds(ttl time.Duration) time.Duration {
	return (ttl + time.Second - 1) / time.Second * time.Second
}

// moveLease moves the keys onto a new lease of ttl. The deadline follows
// the TTL etcd granted, measured from before the grant was sent. A shorter
// lease may take effect the moment the move commits, so the watchdog is
// moved to it first; a move that failed with nothing moved gives the old
// deadline back, one whose answer was lost (ErrUnsettled: it may have
// committed) keeps the earlier one until a renewal reports the lease it
// renewed. A longer lease counts only once the move committed.
func (a *Agent) moveLease(ctx context.Context, ttl time.Duration) error {
	sent := a.d.Clock.Now()
	l := a.leaseLock()
	from, before := l.granted, l.deadline
	earlier := !l.deadline.IsZero() && sent.Add(ttl).Before(l.deadline)
	if earlier {
		l.deadline = sent.Add(ttl)
	}
	a.leaseUnlock()
	if earlier {
		a.applyGuard()
	}
	granted, err := a.d.DCS.MoveLease(ctx, ttl)
	if err != nil && earlier && !errors.Is(err, dcs.ErrUnsettled) {
		// Nothing moved: the current lease's deadline holds.
		l = a.leaseLock()
		if l.deadline.Equal(sent.Add(ttl)) {
			l.deadline = before
		}
		a.leaseUnlock()
	}
	if notMoved(err) {
		a.noteMove(err, "cannot move the lease to the new ttl: keeping the current one, renewed", "ttl", ttl)
		return err
	}
	a.noteRenewal(sent, granted, err)
	l = a.leaseLock()
	if err == nil {
		l.asked = ttl
	}
	a.leaseUnlock()
	if err != nil {
		a.noteMove(err, "lease move failed: keeping the current lease, retrying next round", "ttl", ttl)
		return err
	}
	a.noteMove(nil, "")
	a.log.Info("lease moved to the new ttl", "from", from, "ttl", ttl, "granted", granted)
	return nil
}

// noteMove logs a failed move once per distinct reason.
func (a *Agent) noteMove(err error, msg string, kv ...any) {
	why := ""
	if err != nil {
		why = err.Error()
	}
	l := a.leaseLock()
	changed := l.moveErr != why
	l.moveErr = why
	a.leaseUnlock()
	if changed && err != nil {
		a.log.Warn(msg, append(kv, "error", err)...)
	}
}

// startKeeper starts the keeper once (the loop's first step does): it
// renews every loop_wait, measured from the previous renewal's send time,
// until stop.
func (a *Agent) startKeeper() {
	l := a.leaseLock()
	if l.keeping {
		a.leaseUnlock()
		return
	}
	l.keeping = true
	a.leaseUnlock()
	a.stopKeeper = a.d.Clock.Go(func(ctx context.Context) {
		warned := false
		var stopRounds func()
		defer func() {
			if stopRounds != nil {
				stopRounds()
			}
		}()
		for {
			// The watchdog first, from the deadline as it stands: after a
			// freeze the deadline may have passed long ago, and the fence
			// must not wait for a renewal that takes retry_timeout to fail
			// (nor for a watchdog that died meanwhile to be started again).
			a.applyGuard()
			sent := a.d.Clock.Now()
			switch stuck := a.stuck(sent); {
			case stuck && !warned:
				a.log.Error("the HA loop made no progress while postgres may accept writes: no longer renewing the lease", "bound", hangBound)
				warned = true
			case !stuck:
				warned = false
				if stopRounds == nil {
					stopRounds = a.startFailsafeRounds()
				}
				err := a.keepLease(ctx)
				if err == nil && stopRounds != nil {
					stopRounds()
					stopRounds = nil
				}
				if err == nil {
					// The loop steps right after the renewal rather than
					// at a phase of its own: both then share one wake-up
					// of this process a loop_wait (an idle agent's main
					// cost), and the step sees the deadline just renewed.
					a.Wake()
				}
			}
			wait := sent.Add(a.renewEvery()).Sub(a.d.Clock.Now())
			if a.d.Clock.Sleep(ctx, max(wait, 0)) != nil {
				return
			}
		}
	})
}

// noteProgress records that the loop is not stuck.
func (a *Agent) noteProgress() {
	l := a.leaseLock()
	l.progress = a.d.Clock.Now()
	a.leaseUnlock()
}

func (a *Agent) stuck(now time.Time) bool {
	l := a.leaseLock()
	defer a.leaseUnlock()
	return l.guard && !l.progress.IsZero() && now.Sub(l.progress) > hangBound
}

// setGuard says whether PostgreSQL may accept writes, and tells the
// watchdog: armed to the lease, or disarmed.
func (a *Agent) setGuard(on bool) {
	l := a.leaseLock()
	l.guard = on
	a.leaseUnlock()
	a.applyGuard()
}

// guardAtStart runs before the first step's renewal and cluster read, each
// of which may take retry_timeout when etcd is away. A server found
// writable then has no lease of this process behind it: whatever lease it
// had may have expired long ago (a paused leader whose agent was stopped),
// and a replica that finds it unreachable (a host frozen now, a postmaster
// killed with a backend left) promotes. So the watchdog is armed at once,
// before PostgreSQL is even asked (a server whose connection slots are all
// taken answers only at the status query's timeout), to one loop_wait
// ahead, and not moved until the first renewal succeeds: a frozen host is
// struck at its thaw, and the window in which another node may promote
// beside this server stays one loop_wait. The cost: a first renewal slower
// than loop_wait fences the server; in a paused cluster the agent then
// takes its key back and restarts it (noteSelfFenced). The end of the
// agent does not fence meanwhile (it cannot know yet whether the cluster
// is paused). It reports whether it left the watchdog armed so.
func (a *Agent) guardAtStart(ctx context.Context) bool {
	if a.d.Watchdog == nil {
		return false
	}
	l := a.leaseLock()
	l.guard, l.startBy = true, a.d.Clock.Now().Add(a.renewEvery())
	a.leaseUnlock()
	a.applyGuard()
	pg, err := a.d.Postgres.State(ctx)
	if err == nil && !pg.MayWrite() {
		l := a.leaseLock()
		l.guard, l.startBy = false, time.Time{}
		a.leaseUnlock()
		a.applyGuard()
		return false
	}
	a.log.Warn("postgres may accept writes and this agent holds no lease yet: watchdog armed until the first renewal", "fence_in", a.renewEvery())
	return true
}

// endStartGuard drops the start arming: from the first decision on, the
// watchdog follows the lease alone.
func (a *Agent) endStartGuard() {
	l := a.leaseLock()
	l.startBy = time.Time{}
	a.leaseUnlock()
}

// setKeepOnExit says whether the agent's end leaves PostgreSQL running.
func (a *Agent) setKeepOnExit(keep bool) {
	l := a.leaseLock()
	changed := l.keepOnExit != keep
	l.keepOnExit = keep
	a.leaseUnlock()
	if changed {
		a.applyGuard()
	}
}

// applyGuard tells the watchdog what the lease state says. With no lease
// (or one already past its margin) while guarding, it is armed to fence at
// once.
func (a *Agent) applyGuard() {
	if a.d.Watchdog == nil {
		return
	}
	l := a.leaseLock()
	guard, deadline, keep, startBy := l.guard, l.deadline, l.keepOnExit, l.startBy
	a.leaseUnlock()
	var err error
	if guard {
		at := a.d.Clock.Now()
		switch {
		case !deadline.IsZero():
			at = deadline.Add(-a.s.SafetyMargin)
		case !startBy.IsZero():
			at = startBy
		}
		// During the first step the agent does not know yet whether the
		// cluster is paused: its end leaves the server as it was before.
		keep = keep || !startBy.IsZero()
		err = a.d.Watchdog.Arm(at, keep)
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

// renewError is why the last renewal failed for want of etcd (nil: it did
// not).
func (a *Agent) renewError() error {
	l := a.leaseLock()
	defer a.leaseUnlock()
	return l.renewErr
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
