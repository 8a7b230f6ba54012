package agent

import (
	"fmt"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
)

// ttl changes under other faults (from the review of the lease move): a
// switchover at the same time, quick flaps followed by a frozen agent,
// and flaps on a slow etcd. Whoever holds the key must have its watchdog
// strike before that key's lease can expire, at every step.

// anyLeaseGuarded: whoever holds the leader key, if its server accepts
// commits, has its watchdog strike before that key's lease expires.
func anyLeaseGuarded(w *world) func() string {
	return func() string {
		h := w.node(w.leaderKey())
		if h == nil {
			return ""
		}
		_, ttl, expires := w.mem.LeaderLease()
		wd := h.wdProc
		if h.pg.canCommit() && wd != nil && !wd.gone && wd.armed && wd.at.After(expires) {
			return fmt.Sprintf("%s's watchdog strikes at %s, after its leader key's lease (ttl %s) expires at %s",
				h.name, wd.at.Format("15:04:05.000"), ttl, expires.Format("15:04:05.000"))
		}
		return ""
	}
}

func (w *world) setTTLNow(t *testing.T, ttl time.Duration) {
	t.Helper()
	w.setDynamic(t, func(d *config.Dynamic) { d.TTL = config.Duration(ttl) })
	w.dyn.TTL = config.Duration(ttl)
}

// A switchover and a ttl change (10 s -> 5 s) issued at once, then 5 -> 30
// one second later; the new leader must end up on a 30 s lease with the
// invariant held throughout.
func TestSimTTLChangeDuringSwitchover(t *testing.T) {
	for _, seed := range []int64{1, 2, 3, 4, 5} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			w := healthySeed(t, seed, simOpts{ttl: 10 * time.Second})
			w.stepCheck = anyLeaseGuarded(w)
			old := w.leaderNode()
			w.request(t, dcs.Failover{Kind: "switchover", Leader: old.name})
			w.setTTLNow(t, 5*time.Second)
			w.runFor(time.Second)
			w.setTTLNow(t, 30*time.Second)
			if !w.until(60*time.Second, func() bool { l := w.leaderNode(); return l != nil && l != old && w.settled() }) {
				w.fatal(t, "switchover with ttl changes did not complete (leader %q)", w.leaderKey())
			}
			if !w.until(10*time.Second, func() bool { _, ttl, _ := w.mem.LeaderLease(); return ttl == 30*time.Second }) {
				_, ttl, _ := w.mem.LeaderLease()
				w.fatal(t, "new leader's lease ttl %s, want 30s", ttl)
			}
			w.runFor(20 * time.Second)
			w.noViolation(t)
		})
	}
}

// 10 -> 30 -> 5 -> 30 -> 5 s, each the moment the previous one is read,
// then the leader's agent freezes (its watchdog runs): the watchdog must
// fence it before the key's 5 s lease could let another node in.
func TestSimTTLFlapThenFreeze(t *testing.T) {
	for _, gap := range []time.Duration{0, 300 * time.Millisecond, 700 * time.Millisecond, 1100 * time.Millisecond} {
		t.Run(gap.String(), func(t *testing.T) {
			w := healthy(t, simOpts{ttl: 10 * time.Second})
			w.stepCheck = anyLeaseGuarded(w)
			l := w.leaderNode()
			for _, ttl := range []time.Duration{30, 5, 30, 5} {
				w.setTTLNow(t, ttl*time.Second)
				w.runFor(gap)
			}
			w.freezeAgent(l)
			w.runFor(40 * time.Second)
			w.noViolation(t)
			w.thaw(l)
			if !w.until(60*time.Second, w.settled) {
				w.fatal(t, "did not settle after the thaw")
			}
			w.noViolation(t)
		})
	}
}

// The leader's etcd is slow (answers after retry_timeout, applies the
// writes) while ttl flaps 10 -> 30 -> 5; its agent then freezes at several
// offsets. The watchdog must strike before the lease the key is on lapses.
func TestSimTTLFlapSlowEtcdFreeze(t *testing.T) {
	for _, at := range []time.Duration{0, 500 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second, 4500 * time.Millisecond, 6 * time.Second} {
		for _, slow := range []time.Duration{2500 * time.Millisecond, 4 * time.Second} {
			t.Run(at.String()+"/"+slow.String(), func(t *testing.T) {
				w := healthy(t, simOpts{ttl: 10 * time.Second})
				w.stepCheck = anyLeaseGuarded(w)
				l := w.leaderNode()
				w.etcdSlow[l.name] = slow
				w.setTTLNow(t, 30*time.Second)
				w.runFor(1200 * time.Millisecond)
				w.setTTLNow(t, 5*time.Second)
				w.runFor(at)
				_, ttl, _ := w.mem.LeaderLease()
				w.freezeAgent(l)
				f := w.watchdogFences[l.name]
				w.runFor(45 * time.Second)
				w.noViolation(t)
				t.Logf("lease ttl at freeze %s; fences %d; leader now %q", ttl, w.watchdogFences[l.name]-f, w.leaderKey())
				clear(w.etcdSlow)
				w.thaw(l)
				if !w.until(60*time.Second, w.settled) {
					w.fatal(t, "did not settle after the thaw")
				}
				w.noViolation(t)
			})
		}
	}
}
