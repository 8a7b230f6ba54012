package agent

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	const lw, ttl = time.Second, 10 * time.Second
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second,
		4: 8 * time.Second, 5: 10 * time.Second, 50: 10 * time.Second} {
		if got := backoffDelay(ActBootstrap, n, lw, ttl); got != want {
			t.Errorf("failure %d: delay %s, want %s", n, got, want)
		}
	}
	if got := backoffDelay(ActClone, 3, 5*time.Second, 2*time.Second); got != 5*time.Second {
		t.Errorf("a ttl below loop_wait: delay %s, want loop_wait", got)
	}
	// The cluster may have no primary while the key is not taken.
	if got := backoffDelay(ActAcquire, 6, lw, ttl); got != lw {
		t.Errorf("acquire after 6 failures: delay %s, want loop_wait", got)
	}
}

func TestRetriedAtOnce(t *testing.T) {
	replica := Observation{Node: Node{Name: "n1"}, PG: PGState{Running: true, Answering: true, InRecovery: true}}
	primary := Observation{Node: Node{Name: "n1"}, PG: PGState{Running: true, Answering: true}}
	for _, tc := range []struct {
		name string
		o    Observation
		a    Action
		want bool
	}{
		{"fence", replica, ActFence, true},
		{"demote", primary, ActDemote, true},
		{"release", primary, ActRelease, true},
		{"heartbeat", primary, ActHeartbeat, true},
		{"operator restart", replica, ActRestart, true},
		{"bootstrap", Observation{Node: Node{Name: "n1"}}, ActBootstrap, false},
		{"clone", replica, ActClone, false},
		{"acquire", replica, ActAcquire, false},
		{"follow of a standby", replica, ActFollow, false},
		{"follow of a writable non-leader", primary, ActFollow, true},
		{"rewind of a writable non-leader", primary, ActRewind, true},
	} {
		if got := retriedAtOnce(tc.o, Decision{Action: tc.a}); got != tc.want {
			t.Errorf("%s: retried at once %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestFailingRecordAndHold(t *testing.T) {
	const lw, ttl = time.Second, 10 * time.Second
	t0 := time.Unix(1000, 0)
	boot := Decision{Action: ActBootstrap, Reason: "cluster not initialized"}
	errA, errB := errors.New("bootstrap: disk full"), errors.New("bootstrap: permission denied")
	o := Observation{Node: Node{Name: "n1"}, Now: t0}

	f, what := failing{}.record(boot, errA, t0, lw, ttl)
	if what != logFailed || f.Failures != 1 || !f.Next.Equal(t0.Add(time.Second)) {
		t.Fatalf("first failure: %+v log %d", f, what)
	}
	if d, held := f.hold(o, boot); !held || d.Action != ActWait || !strings.Contains(d.Reason, "disk full") {
		t.Fatalf("before its retry time: %v held %v", d, held)
	}
	// The reason may change between loops: still the same action.
	if _, held := f.hold(o, Decision{Action: ActBootstrap, Reason: "other words"}); !held {
		t.Fatal("a new reason escaped the back-off")
	}
	if _, held := f.hold(o, Decision{Action: ActClone, Target: "n2"}); held {
		t.Fatal("another action was held")
	}
	o.Now = t0.Add(time.Second)
	if _, held := f.hold(o, boot); held {
		t.Fatal("held at its retry time")
	}
	// The same error again: counted, not logged; the delay doubles.
	f2, what := f.record(boot, errA, o.Now, lw, ttl)
	if what != logNothing || f2.Failures != 2 || f2.Quiet != 1 || !f2.Next.Equal(o.Now.Add(2*time.Second)) {
		t.Fatalf("second failure: %+v log %d", f2, what)
	}
	// A wait in between does not forget it...
	if f3, _ := f2.record(Decision{Action: ActWait}, nil, o.Now, lw, ttl); f3.Failures != 2 {
		t.Fatalf("a wait forgot the failure: %+v", f3)
	}
	// ...unless the action was not wanted for a ttl past its retry time.
	if f3, _ := f2.record(Decision{Action: ActWait}, nil, f2.Next.Add(ttl+time.Second), lw, ttl); f3.Failures != 0 {
		t.Fatalf("a failure not wanted for a ttl is still shown: %+v", f3)
	}
	// A new error is logged (the caller reports the unlogged one).
	f4, what := f2.record(boot, errB, o.Now, lw, ttl)
	if what != logFailed || f4.Failures != 3 || f4.Quiet != 0 || f4.Err != errB.Error() {
		t.Fatalf("changed error: %+v log %d", f4, what)
	}
	if got := f4.summary(); got != "bootstrap: permission denied" {
		t.Fatalf("summary %q names the action twice or not at all", got)
	}
	// Success of the same action forgets it, and says so.
	if f5, what := f4.record(boot, nil, o.Now, lw, ttl); what != logRecovered || f5.Failures != 0 {
		t.Fatalf("success: %+v log %d", f5, what)
	}
	// Success of another action that does something forgets it too.
	if f6, what := f4.record(Decision{Action: ActClone, Target: "n2"}, nil, o.Now, lw, ttl); what != logNothing || f6.Failures != 0 {
		t.Fatalf("another action's success: %+v log %d", f6, what)
	}
	// A different action failing starts its own count.
	clone := Decision{Action: ActClone, Target: "n2"}
	f7, what := f4.record(clone, errors.New("no route"), o.Now, lw, ttl)
	if what != logFailed || f7.Failures != 1 || f7.name() != "clone n2" || f7.summary() != "clone n2: no route" {
		t.Fatalf("another action failing: %+v log %d", f7, what)
	}
	// A fence is never held, whatever failed before.
	ff, _ := failing{}.record(Decision{Action: ActFence}, errA, t0, lw, ttl)
	if _, held := ff.hold(Observation{Now: t0}, Decision{Action: ActFence}); held {
		t.Fatal("a fence was held back")
	}
}
