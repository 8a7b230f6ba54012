package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/config"
)

// Scenarios of a ttl change on a leader: etcd fixes a lease's TTL when it
// grants it, so the keeper moves the leader and member keys onto a new
// lease (guard.go keepLease), and the watchdog must strike before whichever
// lease the leader key is on can expire, at every step of the move.

// leaseGuarded is that invariant, and that the key stays with l.
func leaseGuarded(w *world, l *simNode) func() string {
	guarded := anyLeaseGuarded(w)
	return func() string {
		if name := w.leaderKey(); name != l.name {
			return fmt.Sprintf("leader key held by %q, not %s", name, l.name)
		}
		return guarded()
	}
}

// setTTL writes a new ttl as `edit-config` does and runs until the
// leader's loop has read it (its keeper moves the lease from then on).
func (w *world) setTTL(t *testing.T, l *simNode, ttl time.Duration, then func()) {
	t.Helper()
	w.setDynamic(t, func(d *config.Dynamic) { d.TTL = config.Duration(ttl) })
	if !w.until(5*time.Second, func() bool { return l.agent.dynSnap.Load().TTL.D() == ttl }) {
		w.fatal(t, "%s did not read ttl %s", l.name, ttl)
	}
	if then != nil {
		then()
	}
}

// leaderOfTTL is a healthy 3-node world of ttl 10 s under leaseGuarded,
// its leader, and the check that ends each scenario: after d more, the
// leader still leads and was never fenced by its watchdog.
func leaderOfTTL(t *testing.T) (*world, *simNode, func(d time.Duration, what string)) {
	w := healthy(t, simOpts{ttl: 10 * time.Second})
	l := w.leaderNode()
	w.stepCheck = leaseGuarded(w, l)
	fences := w.watchdogFences[l.name]
	return w, l, func(d time.Duration, what string) {
		t.Helper()
		w.runFor(d)
		w.noViolation(t)
		if f := w.watchdogFences[l.name]; f != fences || w.leaderNode() != l {
			w.fatal(t, "%s: %d watchdog fences of the leader, leader now %q", what, f-fences, w.leaderKey())
		}
	}
}

func (a *Agent) leaseFacts() (deadline time.Time, granted time.Duration, moveErr string) {
	l := a.leaseLock()
	defer a.leaseUnlock()
	return l.deadline, l.granted, l.moveErr
}

// TestSimTTLChangeMovesTheLease: 10 s -> 6 s -> 15 s -> 10 s on a healthy
// leader. Each time the leader key lands on a lease of the new ttl within
// a few rounds and stays there (no move every round), the deadline
// follows the granted TTL, and the leader keeps its key and its primary
// throughout (no fence, no failover).
func TestSimTTLChangeMovesTheLease(t *testing.T) {
	w, l, stillLeads := leaderOfTTL(t)
	for _, ttl := range []time.Duration{6 * time.Second, 15 * time.Second, 10 * time.Second} {
		w.setTTL(t, l, ttl, nil)
		if !w.until(5*time.Second, func() bool { _, got, _ := w.mem.LeaderLease(); return got == ttl }) {
			w.fatal(t, "the leader key's lease did not move to ttl %s", ttl)
		}
		id, _, _ := w.mem.LeaderLease()
		if !w.until(3*time.Second, func() bool {
			dl, granted, _ := l.agent.leaseFacts()
			left := dl.Sub(w.s.now)
			return granted == ttl && left > ttl-1500*time.Millisecond && left <= ttl
		}) {
			dl, granted, _ := l.agent.leaseFacts()
			w.fatal(t, "after the move to %s: granted %s, deadline in %s", ttl, granted, dl.Sub(w.s.now))
		}
		stillLeads(2*ttl, fmt.Sprintf("ttl %s", ttl))
		if now, _, _ := w.mem.LeaderLease(); now != id {
			w.fatal(t, "the lease of ttl %s was replaced again (%x -> %x)", ttl, id, now)
		}
	}
}

// TestSimTTLChangeWhileEtcdUnreachable: the leader reads a shorter ttl and
// loses etcd before its keeper can move the lease. The moves fail with
// nothing moved: the old lease stays (and its deadline: a shorter one
// that never took effect must not fence), and the move succeeds in the
// first round after etcd is back.
func TestSimTTLChangeWhileEtcdUnreachable(t *testing.T) {
	w, l, stillLeads := leaderOfTTL(t)
	id0, _, _ := w.mem.LeaderLease()
	var before time.Time
	w.setTTL(t, l, 6*time.Second, func() {
		w.etcdDown[l.name] = true
		before, _, _ = l.agent.leaseFacts()
	})
	w.runFor(4 * time.Second)
	id, ttl, _ := w.mem.LeaderLease()
	dl, _, moveErr := l.agent.leaseFacts()
	if id != id0 || ttl != 10*time.Second || moveErr == "" || dl.Before(before) {
		w.fatal(t, "etcd unreachable: lease %x (was %x) ttl %s, move error %q, deadline %s (was %s): want the old lease, a failed move, the old deadline",
			id, id0, ttl, moveErr, dl.Format("15:04:05.000"), before.Format("15:04:05.000"))
	}
	w.etcdDown[l.name] = false
	if !w.until(3*time.Second, func() bool { _, got, _ := w.mem.LeaderLease(); return got == 6*time.Second }) {
		w.fatal(t, "the lease did not move once etcd was back")
	}
	stillLeads(10*time.Second, "ttl change during an outage")
}

// TestSimTTLChangeAnswerLost: a slow etcd applies the leader's move to a
// shorter ttl but answers after retry_timeout. The keys may be on the new
// lease: the watchdog stays at the shorter deadline (moved before the move
// was sent), and the next round finds the lease and renews it; no fence.
func TestSimTTLChangeAnswerLost(t *testing.T) {
	w, l, stillLeads := leaderOfTTL(t)
	// Applied at 2 s, answered after the 3 s retry_timeout.
	w.setTTL(t, l, 6*time.Second, func() { w.etcdSlow[l.name] = 4 * time.Second })
	if !w.until(8*time.Second, func() bool { _, _, e := l.agent.leaseFacts(); return strings.Contains(e, "unsettled") }) {
		w.fatal(t, "no unsettled move under a 4 s etcd")
	}
	clear(w.etcdSlow)
	if _, ttl, _ := w.mem.LeaderLease(); ttl != 6*time.Second {
		w.fatal(t, "the late move was not applied: lease ttl %s", ttl)
	}
	if !w.until(3*time.Second, func() bool { _, granted, _ := l.agent.leaseFacts(); return granted == 6*time.Second }) {
		w.fatal(t, "the agent did not take up the moved lease")
	}
	stillLeads(10*time.Second, "a lost move answer")
}

// TestSimTTLChangeRefusedByEtcd: etcd renews the current lease and then
// refuses the new one (a move's grant failing for good). The refusal is
// not a failed renewal: the leader keeps its key, its deadline and its
// primary round after round (before, its deadline stopped advancing and
// it stepped down after ttl).
func TestSimTTLChangeRefusedByEtcd(t *testing.T) {
	w, l, stillLeads := leaderOfTTL(t)
	id0, _, _ := w.mem.LeaderLease()
	w.refuseMove[l.name] = true
	w.setTTL(t, l, 20*time.Second, nil)
	stillLeads(30*time.Second, "a ttl etcd refuses")
	if id, ttl, _ := w.mem.LeaderLease(); id != id0 || ttl != 10*time.Second {
		w.fatal(t, "lease %x ttl %s; want the old lease %x of 10 s", id, ttl, id0)
	}
	if _, _, moveErr := l.agent.leaseFacts(); !strings.Contains(moveErr, "too large") {
		w.fatal(t, "move error %q; want the refusal", moveErr)
	}
}

// TestSimTTLWithoutRoomForThisMargin: a ttl another member accepted (its
// own safety_margin fits) leaves the leader's watchdog no room between two
// renewals. The leader keeps its lease at the ttl it has instead of moving
// to one its watchdog would fence it under; a fitting ttl later moves.
func TestSimTTLWithoutRoomForThisMargin(t *testing.T) {
	w, l, stillLeads := leaderOfTTL(t)
	l.agent.s.SafetyMargin = 4500 * time.Millisecond
	id0, _, _ := w.mem.LeaderLease()
	w.setTTL(t, l, 5*time.Second, nil)
	stillLeads(30*time.Second, "a ttl without room for the leader's margin")
	if id, ttl, _ := w.mem.LeaderLease(); id != id0 || ttl != 10*time.Second {
		w.fatal(t, "lease %x ttl %s; want the old lease %x of 10 s", id, ttl, id0)
	}
	if _, _, moveErr := l.agent.leaseFacts(); !strings.Contains(moveErr, "safety_margin") {
		w.fatal(t, "move error %q; want the margin named", moveErr)
	}
	w.setTTL(t, l, 8*time.Second, nil)
	if !w.until(5*time.Second, func() bool { _, got, _ := w.mem.LeaderLease(); return got == 8*time.Second }) {
		w.fatal(t, "a ttl with room for the margin did not move the lease")
	}
	stillLeads(20*time.Second, "ttl 8 s")
}
