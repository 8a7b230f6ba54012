package agent

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

func TestWantSync(t *testing.T) {
	c := &dcs.Cluster{Members: []dcs.Member{
		{Name: "me", Role: "primary", State: "running", Priority: 100},
		{Name: "a", Role: "replica", State: "running", Streaming: true, Priority: 100, WALPosition: 10},
		{Name: "b", Role: "replica", State: "running", Streaming: true, Priority: 100, WALPosition: 20},
		{Name: "c", Role: "replica", State: "running", Streaming: true, Priority: 200, WALPosition: 20},
		{Name: "lagging", Role: "replica", State: "running", Streaming: false, Priority: 300, WALPosition: 30},
		{Name: "zero", Role: "replica", State: "running", Streaming: true, Priority: 0, WALPosition: 30},
		{Name: "nofail", Role: "replica", State: "running", Streaming: true, Priority: 100, NoFailover: true, WALPosition: 30},
		// nofailover as a Patroni member's tag only.
		{Name: "tagged", Role: "replica", State: "running", Streaming: true, Priority: 100, Tags: map[string]string{"nofailover": "true"}, WALPosition: 30},
		// Streams, but from another replica (tags.replicatefrom).
		{Name: "cascaded", Role: "replica", State: "running", Streaming: true, Priority: 500, WALPosition: 40},
	}}
	direct := map[string]bool{"a": true, "b": true, "c": true, "lagging": true, "zero": true, "nofail": true, "tagged": true}
	cases := []struct {
		name string
		cur  []string
		n    int
		want []string
	}{
		{"best by the candidate order", nil, 1, []string{"c"}},
		{"two", nil, 2, []string{"c", "b"}},
		{"current one kept while eligible", []string{"a"}, 1, []string{"a"}},
		{"ineligible current one replaced", []string{"lagging"}, 1, []string{"c"}},
		{"more than there are", nil, 5, []string{"c", "b", "a"}},
		{"never itself", []string{"me"}, 1, []string{"c"}},
		// A cascaded replica never appears in the leader's
		// pg_stat_replication: naming it would block every commit.
		{"never a cascaded replica", []string{"cascaded"}, 1, []string{"c"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := wantSync(c, "me", tc.cur, tc.n, direct); !slices.Equal(got, tc.want) {
				t.Fatalf("wantSync = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPlanSync(t *testing.T) {
	st := func(cur wal.LSN, sync map[string]wal.LSN) SyncStatus { return SyncStatus{Current: cur, Sync: sync} }
	cases := []struct {
		name    string
		key     []string
		want    []string
		applied []string
		strict  bool
		st      SyncStatus
		pending map[string]wal.LSN
		expect  syncStep
	}{
		{"steady: nothing to do", []string{"a"}, []string{"a"}, []string{"a"}, false,
			st(100, map[string]wal.LSN{"a": 100}), nil, syncStep{}},
		{"replacing a: it leaves the key before commits stop waiting for it", []string{"a"}, []string{"b"}, []string{"a"}, false,
			st(100, map[string]wal.LSN{"a": 100}), nil, syncStep{Key: []string{}, WriteKey: true}},
		{"a no longer synchronous leaves the key", []string{"a"}, []string{"a"}, []string{"a"}, false,
			st(100, map[string]wal.LSN{}), nil, syncStep{Key: []string{}, WriteKey: true}},
		{"then commits wait for b", []string{}, []string{"b"}, []string{"a"}, false,
			st(100, map[string]wal.LSN{"a": 100}), nil, syncStep{Names: []string{"b"}, Apply: true}},
		{"b synchronous but behind what was acknowledged: not yet in the key", []string{}, []string{"b"}, []string{"b"}, false,
			st(100, map[string]wal.LSN{"b": 90}), map[string]wal.LSN{}, syncStep{Pending: map[string]wal.LSN{"b": 100}}},
		{"b caught up past where it was first seen synchronous: joins", []string{}, []string{"b"}, []string{"b"}, false,
			st(120, map[string]wal.LSN{"b": 100}), map[string]wal.LSN{"b": 100}, syncStep{Key: []string{"b"}, WriteKey: true, Pending: map[string]wal.LSN{}}},
		{"b synchronous and flushed to the current position at once: joins", []string{}, []string{"b"}, []string{"b"}, false,
			st(100, map[string]wal.LSN{"b": 100}), map[string]wal.LSN{}, syncStep{Key: []string{"b"}, WriteKey: true}},
		{"no standby, not strict: commits wait for no one", []string{}, nil, []string{"a"}, false,
			st(100, nil), nil, syncStep{Apply: true}},
		{"no standby, strict: commits wait for any one", []string{}, nil, nil, true,
			st(100, nil), nil, syncStep{Names: []string{AnyStandby}, Apply: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := fmt.Sprint(tc.key, tc.want, tc.applied, tc.pending)
			got := planSync(tc.key, tc.want, tc.applied, tc.strict, tc.st, tc.pending)
			if got.WriteKey != tc.expect.WriteKey || got.Apply != tc.expect.Apply ||
				!slices.Equal(got.Key, tc.expect.Key) || !slices.Equal(got.Names, tc.expect.Names) {
				t.Fatalf("planSync = %+v, want %+v", got, tc.expect)
			}
			if after := fmt.Sprint(tc.key, tc.want, tc.applied, tc.pending); after != before {
				t.Fatalf("planSync modified its inputs: %s -> %s", before, after)
			}
			if tc.expect.Pending != nil && !maps.Equal(got.Pending, tc.expect.Pending) {
				t.Fatalf("pending after the step %v, want %v", got.Pending, tc.expect.Pending)
			}
		})
	}
}
