package agent

import (
	"errors"
	"fmt"
	"testing"

	"github.com/pgwarden/pgwarden/dcs"
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
		lastSeen uint64
		wait     bool
		seen     uint64
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
