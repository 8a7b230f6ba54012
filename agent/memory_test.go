package agent

import (
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// TestRemember walks remember through sequences of observations: each
// "since" starts when its condition is first seen, holds while it holds,
// and clears when it ends; a primary stopped while its lease could not be
// counted on is remembered as self-fenced until it runs again or another
// member leads.
func TestRemember(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	led := func(by string) *dcs.Cluster {
		c := &dcs.Cluster{Members: []dcs.Member{{Name: "a", Timeline: 3}, {Name: "b", Timeline: 3}}}
		if by != "" {
			c.Leader = &dcs.Leader{Name: by}
		}
		return c
	}
	primary := PGState{Running: true, Answering: true}
	standby := PGState{Running: true, Answering: true, InRecovery: true, Timeline: 3, Streaming: true}
	stuck := PGState{Running: true, Answering: true, InRecovery: true, Timeline: 2}
	down := PGState{}
	obs := func(s int, c *dcs.Cluster, pg PGState, leaseLeft int) Observation {
		o := Observation{Node: Node{Name: "a", SafetyMargin: 2 * time.Second}, Cluster: c, PG: pg, Now: at(s)}
		if leaseLeft != 0 {
			o.LeaseDeadline = at(s + leaseLeft)
		}
		return o
	}
	type want struct {
		crashed, leaderless, stuck int // seconds since t0 it started; -1: not held
		selfFenced                 bool
	}
	cases := []struct {
		name  string
		start memory
		steps []Observation
		want  []want
	}{
		{"a leader's server crashes and comes back",
			memory{}, []Observation{obs(0, led("a"), primary, 10), obs(1, led("a"), down, 10), obs(2, led("a"), down, 10), obs(3, led("a"), primary, 10)},
			[]want{{-1, -1, -1, false}, {1, -1, -1, false}, {1, -1, -1, false}, {-1, -1, -1, false}}},
		{"leaderless: a blind observation keeps counting",
			memory{}, []Observation{obs(0, led(""), standby, 10), obs(1, nil, standby, 10), obs(2, led(""), standby, 10), obs(3, led("b"), standby, 10)},
			[]want{{-1, 0, -1, false}, {-1, 0, -1, false}, {-1, 0, -1, false}, {-1, -1, -1, false}}},
		{"stuck on an older timeline, then streaming",
			memory{}, []Observation{obs(0, led("b"), stuck, 10), obs(4, led("b"), stuck, 10), obs(5, led("b"), standby, 10)},
			[]want{{-1, -1, 0, false}, {-1, -1, 0, false}, {-1, -1, -1, false}}},
		{"fenced for its lease: remembered until it runs again",
			memory{}, []Observation{obs(0, led("a"), primary, 10), obs(9, led("a"), down, 1), obs(10, nil, down, 0), obs(11, led("a"), primary, 10)},
			// crashedSince counts only while the key is seen held.
			[]want{{-1, -1, -1, false}, {9, -1, -1, true}, {-1, -1, -1, true}, {-1, -1, -1, false}}},
		{"stopped with the lease safe: an operator, not a fence",
			memory{}, []Observation{obs(0, led("a"), primary, 10), obs(1, led("a"), down, 9)},
			[]want{{-1, -1, -1, false}, {1, -1, -1, false}}},
		{"self-fenced is forgotten once another member leads",
			memory{selfFenced: true}, []Observation{obs(0, led("b"), down, 0)},
			[]want{{-1, -1, -1, false}}},
		{"armed at start and found stopped: the start guard fenced it",
			memory{startWritable: true}, []Observation{obs(0, led("a"), down, 10), obs(1, led("a"), down, 10)},
			[]want{{0, -1, -1, true}, {0, -1, -1, true}}},
	}
	for _, c := range cases {
		m := c.start
		for i, o := range c.steps {
			m = remember(m, o)
			var got Observation
			m.annotate(&got)
			w := c.want[i]
			check := func(what string, ts time.Time, s int) {
				if (s < 0) != ts.IsZero() || (s >= 0 && !ts.Equal(at(s))) {
					t.Errorf("%s, step %d: %s = %v, want %d s (-1: not held)", c.name, i, what, ts, s)
				}
			}
			check("crashedSince", got.CrashedSince, w.crashed)
			check("leaderlessSince", got.LeaderlessSince, w.leaderless)
			check("stuckSince", got.StuckSince, w.stuck)
			if got.SelfFenced != w.selfFenced {
				t.Errorf("%s, step %d: selfFenced = %v, want %v", c.name, i, got.SelfFenced, w.selfFenced)
			}
		}
		if m.startWritable {
			t.Errorf("%s: startWritable outlived the first observation", c.name)
		}
	}
}
