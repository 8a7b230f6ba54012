package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	// follows leader (each then holds off for at least ttl); otherwise an
	// error naming the first that did not.
	Confirm(ctx context.Context, members []dcs.Member, leader string, ttl time.Duration) error
}

// ErrFailsafeRefused is a member's refusal to confirm a leader.
var ErrFailsafeRefused = errors.New("failsafe refused")

// failsafeView is what the keeper needs of the last cluster it read.
type failsafeView struct {
	enabled bool
	leader  string
	members []dcs.Member
	// published is the member list the leader wrote for failsafe: every
	// one of them must confirm.
	published []string
	ttl       time.Duration
}

// noteFailsafeView keeps the last cluster etcd gave, for a round run
// while etcd cannot be read.
func (a *Agent) noteFailsafeView(c *dcs.Cluster) {
	v := &failsafeView{enabled: a.st.dynamic.FailsafeMode, ttl: a.st.dynamic.TTL.D(), members: c.Members, published: c.Failsafe}
	if c.Leader != nil {
		v.leader = c.Leader.Name
	}
	a.fsView.Store(v)
	if v.enabled && !a.fsStartHeld {
		// An agent restarted while a failsafe leader ran rounds does not
		// know what it confirmed before: it holds off as if it had
		// confirmed at its start.
		a.fsStartHeld = true
		a.holdFailsafe(a.started.Add(v.ttl))
	}
}

// publishFailsafe keeps the failsafe member list (the leader's, in etcd)
// equal to the members it sees, while failsafe_mode is on: a member not
// on it is never promoted while it is on, and each round must be
// confirmed by all on it.
func (a *Agent) publishFailsafe(ctx context.Context, c *dcs.Cluster) {
	var want []string
	if a.st.dynamic.FailsafeMode {
		for _, m := range c.Members {
			want = append(want, m.Name)
		}
		if !slices.Contains(want, a.s.Name) {
			want = append(want, a.s.Name)
		}
		slices.Sort(want)
	}
	if slices.Equal(want, c.Failsafe) {
		return
	}
	if err := a.d.DCS.SetFailsafe(ctx, want); err != nil {
		a.log.Warn("cannot publish the failsafe member list", "error", err)
	}
}

// failsafeAfter is how long a renewal may take before failsafe rounds
// start beside it. Waiting for the renewal to fail would take
// retry_timeout, and at ttl 5 (retry 2, margin 2) the watchdog's deadline
// comes first; a renewal that answers in time stops the rounds unsent.
const failsafeAfter = 300 * time.Millisecond

// failsafeWanted: this node led in v, failsafe is on, and PostgreSQL may
// accept writes.
func (a *Agent) failsafeWanted(v *failsafeView) bool {
	if v == nil || !v.enabled || v.leader != a.s.Name || a.d.Failsafe == nil || v.ttl <= 0 ||
		!slices.Contains(v.published, a.s.Name) || a.stuck(a.d.Clock.Now()) {
		// No list published yet: no member is known to hold off. A loop
		// stuck past hangBound is fenced, not kept.
		return false
	}
	l := a.leaseLock()
	defer a.leaseUnlock()
	return l.guard
}

// failsafeMembers are the members a round asks: every one on the
// published list (one with no record cannot answer: the round fails) and
// any other the view shows.
func failsafeMembers(v *failsafeView) []dcs.Member {
	out := append([]dcs.Member(nil), v.members...)
	for _, name := range v.published {
		if !slices.ContainsFunc(out, func(m dcs.Member) bool { return m.Name == name }) {
			out = append(out, dcs.Member{Name: name})
		}
	}
	return out
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
	err := a.d.Failsafe.Confirm(rctx, failsafeMembers(v), a.s.Name, v.ttl)
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
// off taking the key for the leader's ttl or its own, the longer.
func (a *Agent) ConfirmFailsafe(leader string, leaderTTL time.Duration) error {
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
			want = dcs.Addr(m.ConnURL)
		}
	}
	if want == "" || st.Upstream != want {
		return fmt.Errorf("%w: this member streams from %q, not from %s at %q", ErrFailsafeRefused, st.Upstream, leader, want)
	}
	a.holdFailsafe(a.d.Clock.Now().Add(max(v.ttl, leaderTTL)))
	return nil
}

// holdFailsafe extends this member's failsafe hold to until (a hold is
// never shortened).
func (a *Agent) holdFailsafe(until time.Time) {
	l := a.leaseLock()
	defer a.leaseUnlock()
	if until.After(l.failsafeHold) {
		l.failsafeHold = until
	}
}

// failsafeHold is until when this member confirmed a leader.
func (a *Agent) failsafeHold() time.Time {
	l := a.leaseLock()
	defer a.leaseUnlock()
	return l.failsafeHold
}
