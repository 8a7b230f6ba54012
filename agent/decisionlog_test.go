package agent

import "testing"

func TestSameDecisionIgnoresFigures(t *testing.T) {
	d := func(a Action, target, reason string) Decision {
		return Decision{Action: a, Target: target, Reason: reason}
	}
	for _, tc := range []struct {
		a, b Decision
		same bool
	}{
		{d(ActFence, "", "lease could expire in 1.234s (safety margin 2s)"), d(ActFence, "", "lease could expire in 0.98s (safety margin 2s)"), true},
		{d(ActAcquire, "", "best candidate at WAL 604 priority 100"), d(ActAcquire, "", "best candidate at WAL 9120 priority 100"), true},
		{d(ActWait, "", "the last leader node2 at node2:5432 still runs"), d(ActWait, "", "the last leader node3 at node3:5432 still runs"), false},
		{d(ActWait, "", "replica of node2"), d(ActWait, "", "replica of node2"), true},
		{d(ActFollow, "node2", "leader is node2"), d(ActFollow, "node3", "leader is node3"), false},
		{d(ActWait, "", "x"), d(ActHeartbeat, "", "x"), false},
	} {
		if got := sameDecision(tc.a, tc.b); got != tc.same {
			t.Errorf("sameDecision(%q, %q) = %v, want %v", tc.a.Reason, tc.b.Reason, got, tc.same)
		}
	}
}
