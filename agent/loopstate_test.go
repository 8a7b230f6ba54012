package agent

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

// TestAdvance: each report of an action's outcome changes the part of the
// loop's state it is about, and nothing else; the state it starts from is
// not modified.
func TestAdvance(t *testing.T) {
	const lw = time.Second
	now := t0.Add(time.Minute)
	boom := errors.New("boom")
	clone := Decision{Action: ActClone, Target: "l", Reason: "data directory empty"}
	start := func() loopState {
		return loopState{
			dynamic:    config.Dynamic{TTL: config.Duration(10 * time.Second), LoopWait: config.Duration(lw)},
			last:       clone,
			startFails: 2, blindRelease: t0, replayWait: 7, failovers: 1,
			slots:  slotState{seen: map[string]time.Time{"l": t0}, applied: "a|", at: t0},
			sync:   syncState{applied: true, names: []string{"a"}, pending: map[string]wal.LSN{"b": 100}},
			member: memberWrite{at: t0, m: dcs.Member{Name: "me", State: "running"}},
		}
	}
	cases := []struct {
		name string
		d    Decision
		held bool
		out  Outcome
		want func(*loopState)
	}{
		{"a wait that did nothing changes nothing", Decision{Action: ActWait, Reason: "x"}, false, Outcome{},
			func(s *loopState) { s.last = Decision{Action: ActWait, Reason: "x"} }},
		{"a failed clone toward a source counts a failed start and backs off",
			clone, false, Outcome{Err: boom},
			func(s *loopState) {
				s.startFails = 3
				s.fail = failing{Action: ActClone, Target: "l", Failures: 1, Since: now, Next: now.Add(lw), Err: "boom"}
			}},
		{"a clone that succeeded ends the count", clone, false, Outcome{},
			func(s *loopState) { s.startFails = 0 }},
		{"a failed start with no source does not count",
			Decision{Action: ActStartReplica}, false, Outcome{Err: boom},
			func(s *loopState) {
				s.last = Decision{Action: ActStartReplica}
				s.fail = failing{Action: ActStartReplica, Failures: 1, Since: now, Next: now.Add(lw), Err: "boom"}
			}},
		{"a held wait leaves the back-off as it was",
			Decision{Action: ActWait, Reason: "clone l backs off"}, true, Outcome{Err: boom},
			func(s *loopState) { s.last = Decision{Action: ActWait, Reason: "clone l backs off"} }},
		{"a blind release is remembered", Decision{Action: ActRelease}, false, Outcome{Did: effects{BlindRelease: now}},
			func(s *loopState) { s.last, s.blindRelease = Decision{Action: ActRelease}, now }},
		{"a promotion that waits for replay", Decision{Action: ActAcquire}, false, Outcome{Did: effects{Replay: true, ReplayWait: 9}},
			func(s *loopState) { s.last, s.replayWait = Decision{Action: ActAcquire}, 9 }},
		{"a promotion that no longer waits", Decision{Action: ActAcquire}, false,
			Outcome{Did: effects{Replay: true, Promoted: true, Sync: syncRun{Planned: true, Set: true, Names: []string{AnyStandby}}}},
			func(s *loopState) {
				s.last, s.replayWait, s.failovers = Decision{Action: ActAcquire}, 0, 2
				s.sync = syncState{applied: true, names: []string{AnyStandby}}
			}},
		{"an acquire that did not reach replay leaves the wait", Decision{Action: ActAcquire}, false, Outcome{Err: boom},
			func(s *loopState) {
				s.last = Decision{Action: ActAcquire}
				s.fail = failing{Action: ActAcquire, Failures: 1, Since: now, Next: now.Add(lw), Err: "boom"}
			}},
		{"a heartbeat's slots and sync bookkeeping", Decision{Action: ActHeartbeat}, false,
			Outcome{Did: effects{Slots: slotsRun{Plan: "a,b|", At: now}, Sync: syncRun{Planned: true, Pending: map[string]wal.LSN{"c": 200}}}},
			func(s *loopState) {
				s.last = Decision{Action: ActHeartbeat}
				s.slots.applied, s.slots.at = "a,b|", now
				s.sync.pending = map[string]wal.LSN{"c": 200}
			}},
		{"the member record written before a long action", clone, false,
			Outcome{Did: effects{Member: memberWrite{at: now, m: dcs.Member{Name: "me", State: "stopped"}}}},
			func(s *loopState) {
				s.startFails = 0
				s.member = memberWrite{at: now, m: dcs.Member{Name: "me", State: "stopped"}}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := start()
			got, _ := advance(st, tc.d, tc.held, tc.out, now, lw)
			want := start()
			tc.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("advance =\n%+v\nwant\n%+v", got, want)
			}
			if !reflect.DeepEqual(st, start()) {
				t.Errorf("advance modified the state it started from: %+v", st)
			}
		})
	}
}

// TestAdvanceLogs: advance says what the back-off logs, as record does.
func TestAdvanceLogs(t *testing.T) {
	st := loopState{dynamic: config.Dynamic{TTL: config.Duration(10 * time.Second)}}
	d := Decision{Action: ActBootstrap}
	st, what := advance(st, d, false, Outcome{Err: errors.New("disk full")}, t0, time.Second)
	if what != logFailed {
		t.Fatalf("first failure: log %v, want logFailed", what)
	}
	if _, what = advance(st, d, false, Outcome{}, t0.Add(time.Second), time.Second); what != logRecovered {
		t.Fatalf("success after it: log %v, want logRecovered", what)
	}
	if _, what = advance(st, Decision{Action: ActWait}, true, Outcome{}, t0.Add(time.Hour), time.Second); what != logNothing {
		t.Fatalf("a held wait: log %v, want logNothing", what)
	}
}

// TestObserved: a cluster read stamps when, records whom it saw, and takes
// the stored dynamic configuration when it is valid; an invalid one keeps
// the last good one and says why; none stored keeps what is there.
func TestObserved(t *testing.T) {
	good := config.Dynamic{TTL: config.Duration(30 * time.Second), LoopWait: config.Duration(time.Second)}
	c := func(raw string) *dcs.Cluster {
		cl := &dcs.Cluster{Members: []dcs.Member{{Name: "a"}, {Name: "b"}}}
		if raw != "" {
			cl.Config = []byte(raw)
		}
		return cl
	}
	cases := []struct {
		name    string
		c       *dcs.Cluster
		wantTTL time.Duration
		wantErr bool
	}{
		{"a valid configuration is taken", c(`{"ttl": 20, "loop_wait": 2, "retry_timeout": 3}`), 20 * time.Second, false},
		{"an invalid one keeps the last good one", c(`{"ttl": 1}`), 30 * time.Second, true},
		{"an unknown key is invalid", c(`{"ttl": 20, "tll": 3}`), 30 * time.Second, true},
		{"none stored keeps what is there", c(""), 30 * time.Second, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := loopState{dynamic: good}
			now := t0.Add(time.Minute)
			got, err := st.observed(tc.c, now, time.Hour)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want one: %v", err, tc.wantErr)
			}
			if got.dynamic.TTL.D() != tc.wantTTL {
				t.Errorf("ttl %s, want %s", got.dynamic.TTL.D(), tc.wantTTL)
			}
			if !got.lastDCS.Equal(now) {
				t.Errorf("lastDCS %v, want %v", got.lastDCS, now)
			}
			if want := map[string]time.Time{"a": now, "b": now}; !maps.Equal(got.slots.seen, want) {
				t.Errorf("seen %v, want %v", got.slots.seen, want)
			}
			// Read again, the same stored value gives the same answer.
			again, err2 := got.observed(tc.c, now.Add(time.Second), time.Hour)
			if (err2 != nil) != tc.wantErr || again.dynamic.TTL.D() != tc.wantTTL {
				t.Errorf("read again: ttl %s, error %v", again.dynamic.TTL.D(), err2)
			}
		})
	}
}

// TestSeeMembers: a member in the view is seen now; one gone is kept
// until it has been gone for forget (its slot may still be kept), then
// forgotten; the map it started from is not modified.
func TestSeeMembers(t *testing.T) {
	now := t0.Add(2 * time.Hour)
	c := &dcs.Cluster{Members: []dcs.Member{{Name: "a"}, {Name: "new"}}}
	cases := []struct {
		name string
		seen map[string]time.Time
		want map[string]time.Time
	}{
		{"first read", nil, map[string]time.Time{"a": now, "new": now}},
		{"a present member is seen again", map[string]time.Time{"a": t0}, map[string]time.Time{"a": now, "new": now}},
		{"gone for less than forget: kept", map[string]time.Time{"gone": now.Add(-59 * time.Minute)},
			map[string]time.Time{"a": now, "new": now, "gone": now.Add(-59 * time.Minute)}},
		{"gone for forget: forgotten", map[string]time.Time{"gone": now.Add(-time.Hour)}, map[string]time.Time{"a": now, "new": now}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := maps.Clone(tc.seen)
			got := seeMembers(tc.seen, c, now, time.Hour)
			if !maps.Equal(got, tc.want) {
				t.Errorf("seeMembers = %v, want %v", got, tc.want)
			}
			if !maps.Equal(tc.seen, before) {
				t.Errorf("seeMembers modified its input: %v -> %v", before, tc.seen)
			}
		})
	}
}

// TestSlotStateNext: only a plan applied is remembered, with when.
func TestSlotStateNext(t *testing.T) {
	seen := map[string]time.Time{"a": t0}
	s := slotState{seen: seen, applied: "a|", at: t0}
	if got := s.next(slotsRun{}); !reflect.DeepEqual(got, s) {
		t.Errorf("nothing applied: %+v, want %+v", got, s)
	}
	later := t0.Add(time.Minute)
	want := slotState{seen: seen, applied: "a,b|c", at: later}
	if got := s.next(slotsRun{Plan: "a,b|c", At: later}); !reflect.DeepEqual(got, want) {
		t.Errorf("a plan applied: %+v, want %+v", got, want)
	}
}

// TestSyncStateNext: a round's plan replaces the pending positions, a set
// list replaces what commits wait for; a round that did neither (an error
// before it planned, a former leader's key) changes nothing.
func TestSyncStateNext(t *testing.T) {
	cur := syncState{applied: true, names: []string{"a"}, pending: map[string]wal.LSN{"b": 100}}
	cases := []struct {
		name string
		r    syncRun
		want syncState
	}{
		{"nothing done", syncRun{}, cur},
		{"planned, nothing set (the key written, or the set failed)", syncRun{Planned: true, Pending: map[string]wal.LSN{"b": 100, "c": 120}},
			syncState{applied: true, names: []string{"a"}, pending: map[string]wal.LSN{"b": 100, "c": 120}}},
		{"planned and set: no position seen counts", syncRun{Planned: true, Pending: map[string]wal.LSN{}, Set: true, Names: []string{"b"}},
			syncState{applied: true, names: []string{"b"}, pending: map[string]wal.LSN{}}},
		{"set outside synchronous mode", syncRun{Set: true}, syncState{applied: true, pending: map[string]wal.LSN{"b": 100}}},
		{"after a promotion", syncRun{Planned: true, Set: true, Names: []string{AnyStandby}}, syncState{applied: true, names: []string{AnyStandby}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := cur.next(tc.r); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("next = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestSyncRoundsThroughState walks a new standby into the sync key over
// heartbeats, each round planned from the state the last one left: the
// key names it only after commits wait for it and it has flushed past the
// leader's position when it was first seen synchronous.
func TestSyncRoundsThroughState(t *testing.T) {
	want := []string{"b"}
	pendingSince150 := fmt.Sprint("none, pending ", map[string]wal.LSN{"b": 150})
	rounds := []struct {
		st       SyncStatus
		key      []string
		wantStep string
	}{
		// Just started: what commits wait for is not known, so it is set.
		{SyncStatus{Current: 100}, nil, "apply [b]"},
		// b waited for, behind 150: pending since 150.
		{SyncStatus{Current: 150, Sync: map[string]wal.LSN{"b": 120}}, nil, pendingSince150},
		// Past 120 but not 150: still pending.
		{SyncStatus{Current: 200, Sync: map[string]wal.LSN{"b": 149}}, nil, pendingSince150},
		{SyncStatus{Current: 210, Sync: map[string]wal.LSN{"b": 150}}, nil, "key [b]"},
	}
	var s syncState
	for i, r := range rounds {
		applied := s.names
		if !s.applied {
			applied = []string{"\x00unknown"}
		}
		step := planSync(r.key, want, applied, false, r.st, s.pending)
		run := syncRun{Planned: true, Pending: step.Pending}
		var got string
		switch {
		case step.WriteKey:
			got = fmt.Sprint("key ", step.Key)
		case step.Apply:
			got = fmt.Sprint("apply ", step.Names)
			run.Set, run.Names = true, step.Names
		default:
			got = fmt.Sprint("none, pending ", step.Pending)
		}
		if got != r.wantStep {
			t.Fatalf("round %d: %s, want %s", i, got, r.wantStep)
		}
		s = s.next(run)
		if i == 0 && (!s.applied || !slices.Equal(s.names, want)) {
			t.Fatalf("round 0: state %+v, want commits waiting for %v", s, want)
		}
	}
}

// TestStartFailures: failed starts toward a source are counted in a row.
func TestStartFailures(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		d    Decision
		err  error
		want int
	}{
		{Decision{Action: ActStartReplica, Target: "l"}, boom, 3},
		{Decision{Action: ActRewind, Target: "l"}, boom, 3},
		{Decision{Action: ActClone, Target: "l"}, boom, 3},
		{Decision{Action: ActClone, Target: "l"}, nil, 0},
		{Decision{Action: ActStartReplica}, boom, 2},
		{Decision{Action: ActStartReplica}, nil, 0},
		{Decision{Action: ActFollow, Target: "l"}, boom, 2},
		{Decision{Action: ActWait}, nil, 2},
	} {
		if got := startFailures(2, tc.d, tc.err); got != tc.want {
			t.Errorf("%s %s (error %v): %d, want %d", tc.d.Action, tc.d.Target, tc.err, got, tc.want)
		}
	}
}

// TestWrittenCaches: what was last written changes only with a write, and
// a write's parameters are copied (the dynamic configuration they came from
// may change under them).
func TestWrittenCaches(t *testing.T) {
	m := memberWrite{at: t0, m: dcs.Member{Name: "me"}}
	if got := m.next(memberWrite{}); !reflect.DeepEqual(got, m) {
		t.Errorf("member not written: %+v, want %+v", got, m)
	}
	w := memberWrite{at: t0.Add(time.Second), m: dcs.Member{Name: "me", State: "running"}}
	if got := m.next(w); !reflect.DeepEqual(got, w) {
		t.Errorf("member written: %+v, want %+v", got, w)
	}

	p := paramsWritten{ok: true, params: map[string]string{"work_mem": "4MB"}}
	if got := p.next(paramsWritten{}); !reflect.DeepEqual(got, p) {
		t.Errorf("parameters not written: %+v, want %+v", got, p)
	}
	src := map[string]string{"work_mem": "8MB"}
	got := p.next(paramsWritten{ok: true, params: src})
	src["work_mem"] = "16MB"
	if got.params["work_mem"] != "8MB" || !got.ok {
		t.Errorf("parameters written: %+v, want work_mem 8MB", got)
	}
	if got := (paramsWritten{}).next(paramsWritten{ok: true}); !got.ok {
		t.Errorf("empty parameters written: %+v, want ok", got)
	}
}
