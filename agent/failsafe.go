package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// Failsafe mode (the dynamic failsafe_mode): when etcd cannot be reached,
// a leader that every member of the last known member list confirms over
// REST (each is a replica following it, not promoted) keeps its primary.
// Each round in which all confirm counts as a renewal: the lease deadline
// becomes the round's send time plus ttl, and the watchdog follows it. A
// member that confirmed does not take the key for ttl from its answer, so
// it cannot be promoted before the leader's extended deadline has passed
// (its hold starts after the round was sent). Replicas never promote
// without etcd in any case; when etcd returns, the leader renews its lease
// (etcd extends leases across its own leader election) and the others
// keep waiting while its PostgreSQL answers as a primary.

// Failsafe asks the other members to confirm this leader
// (rest.PeerClient: POST /failsafe).
type Failsafe interface {
	// Confirm returns nil when every member but leader answered that it
	// follows leader; otherwise an error naming the first that did not.
	Confirm(ctx context.Context, members []dcs.Member, leader string) error
}

// ErrFailsafeRefused is a member's refusal to confirm a leader.
var ErrFailsafeRefused = errors.New("failsafe refused")

// failsafeView is what the keeper needs of the last cluster it read.
type failsafeView struct {
	enabled bool
	leader  string
	members []dcs.Member
	ttl     time.Duration
}

// noteFailsafeView keeps the last cluster etcd gave, for a round run
// while etcd cannot be read.
func (a *Agent) noteFailsafeView(c *dcs.Cluster) {
	v := &failsafeView{enabled: a.dynamic.FailsafeMode, ttl: a.dynamic.TTL.D(), members: c.Members}
	if c.Leader != nil {
		v.leader = c.Leader.Name
	}
	a.fsView.Store(v)
}

// failsafeAfter is how long a renewal may take before failsafe rounds
// start beside it. Waiting for the renewal to fail would take
// retry_timeout, and at ttl 5 (retry 2, margin 2) the watchdog's deadline
// comes first; a renewal that answers in time stops the rounds unsent.
const failsafeAfter = 300 * time.Millisecond

// failsafeWanted: this node led in v, failsafe is on, and PostgreSQL may
// accept writes.
func (a *Agent) failsafeWanted(v *failsafeView) bool {
	if v == nil || !v.enabled || v.leader != a.s.Name || a.d.Failsafe == nil || v.ttl <= 0 {
		return false
	}
	l := a.leaseLock()
	defer a.leaseUnlock()
	return l.guard
}

// startFailsafeRounds starts, beside a renewal, the rounds that keep this
// leader while etcd does not answer: one every loop_wait (send to send),
// not paced by renewals that each take retry_timeout to fail. The keeper
// stops them once a renewal succeeds; a round already answered stands.
func (a *Agent) startFailsafeRounds() (stop func()) {
	if !a.failsafeWanted(a.fsView.Load()) {
		return nil
	}
	return a.d.Clock.Go(func(ctx context.Context) {
		if a.d.Clock.Sleep(ctx, failsafeAfter) != nil {
			return
		}
		for {
			sent := a.d.Clock.Now()
			if v := a.fsView.Load(); a.failsafeWanted(v) {
				a.failsafeRound(ctx, v)
			}
			if a.d.Clock.Sleep(ctx, max(sent.Add(a.renewEvery()).Sub(a.d.Clock.Now()), 0)) != nil {
				return
			}
		}
	})
}

// failsafeRound asks every member of v to confirm this leader; when all
// do, the lease deadline is extended from the round's send time (a
// member's hold starts at its answer, after that).
func (a *Agent) failsafeRound(ctx context.Context, v *failsafeView) {
	sent := a.d.Clock.Now()
	rctx, cancel := context.WithTimeout(ctx, a.s.PeerTimeout)
	err := a.d.Failsafe.Confirm(rctx, v.members, a.s.Name)
	cancel()
	if ctx.Err() != nil {
		return // the renewal answered meanwhile
	}
	l := a.leaseLock()
	was := l.failsafe
	if err == nil {
		if d := sent.Add(v.ttl); d.After(l.deadline) {
			l.deadline = d
		}
		l.failsafe = true
		l.failsafeRounds++
	} else {
		l.failsafe = false
	}
	a.leaseUnlock()
	switch {
	case err == nil && !was:
		a.log.Warn("etcd unreachable: failsafe: every member confirms this leader; staying primary", "members", len(v.members))
	case err != nil:
		a.log.Warn("etcd unreachable and failsafe not confirmed: the lease runs out", "error", err)
	}
	if err == nil {
		a.applyGuard()
	}
}

// ConfirmFailsafe is a member's answer to a leader's failsafe round: nil
// when this node is a running replica that follows leader; then it holds
// off taking the key for ttl.
func (a *Agent) ConfirmFailsafe(leader string) error {
	v := a.fsView.Load()
	st := a.Status()
	switch {
	case v == nil || !v.enabled:
		return fmt.Errorf("%w: failsafe_mode is off here", ErrFailsafeRefused)
	case leader == a.s.Name:
		return fmt.Errorf("%w: %s is this member", ErrFailsafeRefused, leader)
	case st == nil || !st.Running:
		return fmt.Errorf("%w: postgres is not running here", ErrFailsafeRefused)
	case !st.InRecovery:
		return fmt.Errorf("%w: this member runs as a primary", ErrFailsafeRefused)
	case st.IsLeader:
		return fmt.Errorf("%w: this member holds the leader key", ErrFailsafeRefused)
	case v.leader != leader:
		return fmt.Errorf("%w: this member's last view names leader %q", ErrFailsafeRefused, v.leader)
	}
	var want string
	for _, m := range v.members {
		if m.Name == leader {
			want = hostPort(m.ConnURL)
		}
	}
	if want == "" || st.Upstream != want {
		return fmt.Errorf("%w: this member streams from %q, not from %s at %q", ErrFailsafeRefused, st.Upstream, leader, want)
	}
	l := a.leaseLock()
	if until := a.d.Clock.Now().Add(v.ttl); until.After(l.failsafeHold) {
		l.failsafeHold = until
	}
	a.leaseUnlock()
	return nil
}

// failsafeHold is until when this member confirmed a leader.
func (a *Agent) failsafeHold() time.Time {
	l := a.leaseLock()
	defer a.leaseUnlock()
	return l.failsafeHold
}
