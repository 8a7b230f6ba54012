package agent

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

func TestLeaderKeyLost(t *testing.T) {
	for _, tc := range []struct {
		err  error
		lost bool
	}{
		{nil, false},
		{fmt.Errorf("update leader: %w", dcs.ErrNotLeader), true},
		{fmt.Errorf("update leader: %w", dcs.ErrLeaseExpired), true},
		{fmt.Errorf("update leader: %w", dcs.ErrUnavailable), false},
		{errors.New("context deadline exceeded"), false},
	} {
		if got := leaderKeyLost(tc.err); got != tc.lost {
			t.Errorf("leaderKeyLost(%v) = %v, want %v", tc.err, got, tc.lost)
		}
	}
}

func TestReplayWaitStep(t *testing.T) {
	for _, tc := range []struct {
		name     string
		pg       PGState
		lastSeen wal.LSN
		wait     bool
		seen     wal.LSN
	}{
		{"replay caught up: promote", PGState{WAL: 100, Replayed: 100}, 0, false, 0},
		{"replay behind: wait", PGState{WAL: 100, Replayed: 60}, 0, true, 60},
		{"replay moved since last loop: wait on", PGState{WAL: 100, Replayed: 80}, 60, true, 80},
		{"replay stuck since last loop: promote", PGState{WAL: 100, Replayed: 80}, 80, false, 0},
	} {
		wait, seen := replayWaitStep(tc.pg, tc.lastSeen)
		if wait != tc.wait || seen != tc.seen {
			t.Errorf("%s: wait %v seen %d, want %v %d", tc.name, wait, seen, tc.wait, tc.seen)
		}
	}
}

func TestReclonesAfterRewind(t *testing.T) {
	if !reclonesAfterRewind(fmt.Errorf("rewind: %w: no common ancestor", ErrCannotRewind)) {
		t.Error("a data directory that cannot be rewound is not re-cloned")
	}
	if reclonesAfterRewind(errors.New("rewind: could not connect to the source")) {
		t.Error("an unreachable source made the data directory be wiped")
	}
}

func TestPlanPooler(t *testing.T) {
	const self, selfAddr, other, otherAddr = "me", "127.0.0.1:5432", "other", "127.0.0.1:5433"
	running := func(o *Observation) { o.Cluster.Members[1].Role, o.Cluster.Members[1].State = "primary", "running" }
	switchover := func(o *Observation) {
		o.Cluster.Failover = &dcs.Failover{Kind: "switchover", Leader: other, Candidate: self}
	}
	writable := Outcome{KeyHeld: true, PG: PGState{Running: true, Answering: true}}
	for _, tc := range []struct {
		name           string
		o              Observation
		out            Outcome
		current        string
		paused         bool
		target         string
		repoint, pause bool
	}{
		{"a running leader: point at it", obs(all(leader(other), running)), Outcome{}, "", false, otherAddr, true, false},
		{"already pointing there: nothing", obs(all(leader(other), running)), Outcome{}, otherAddr, false, otherAddr, false, false},
		{"the leader's record not yet primary: keep the old target", obs(leader(other)), Outcome{}, "10.0.0.9:5432", false, "", false, false},
		{"no leader, nothing paused: point at nothing", obs(nil), Outcome{}, otherAddr, false, "", true, false},
		{"no leader, clients paused for a handover: keep the old target", obs(nil), Outcome{}, otherAddr, true, "", false, false},
		{"this node just took the key and accepts writes", obs(nil), writable, otherAddr, true, selfAddr, true, false},
		{"this node leads and accepts writes", obs(all(primary, leader(self))), writable, otherAddr, false, selfAddr, true, false},
		{"a switchover is due: hold this host's clients", obs(all(leader(other), running, switchover)), Outcome{}, otherAddr, false, otherAddr, false, true},
		{"already held: not again", obs(all(leader(other), running, switchover)), Outcome{}, otherAddr, true, otherAddr, false, false},
	} {
		got := planPooler(tc.o, tc.out, self, selfAddr, tc.current, tc.paused)
		if got.Target != tc.target || got.Repoint != tc.repoint || got.Pause != tc.pause {
			t.Errorf("%s: %+v, want target %q repoint %v pause %v", tc.name, got, tc.target, tc.repoint, tc.pause)
		}
	}
}

func TestUnpausedPoolers(t *testing.T) {
	c := &dcs.Cluster{Members: []dcs.Member{
		{Name: "a", Pooler: true, State: "running"},                     // self: never waited for
		{Name: "b", Pooler: true, State: "running"},                     // waited for
		{Name: "c", Pooler: true, PoolerPaused: true, State: "running"}, // paused
		{Name: "d", Pooler: false, State: "running"},                    // no pooler
		{Name: "e", Pooler: true, State: "stopped"},                     // down: sends no client
		{Name: "f", Pooler: true, State: "starting"},                    // not running yet
	}}
	if got := unpausedPoolers(c, "a"); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("waiting for %v; want [b]", got)
	}
	if got := unpausedPoolers(&dcs.Cluster{}, "a"); len(got) != 0 {
		t.Fatalf("no members, waiting for %v", got)
	}
}

func TestHandedOver(t *testing.T) {
	cases := []struct {
		name string
		ps   []Peer
		want bool
	}{
		{"received the checkpoint", []Peer{{Reachable: true, WAL: 100}}, true},
		{"received beyond it", []Peer{{Reachable: true, WAL: 101}}, true},
		{"one byte short", []Peer{{Reachable: true, WAL: 99}}, false},
		{"unreachable (its last WAL is not an answer)", []Peer{{Reachable: false, WAL: 100}}, false},
		{"no answer", nil, false},
		{"two answers for one question", []Peer{{Reachable: true, WAL: 100}, {Reachable: true, WAL: 100}}, false},
	}
	for _, c := range cases {
		if got := handedOver(c.ps, 100); got != c.want {
			t.Errorf("%s: handedOver = %v, want %v", c.name, got, c.want)
		}
	}
}
