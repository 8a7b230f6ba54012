package agent

import (
	"slices"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// TestSlotPlan: each member's slot lives where it streams from: the leader,
// or the replica its replicatefrom tag names while that one runs; a gone
// member's slot stays member_slots_ttl, then goes. (Before: only the leader
// made slots, one for every member: a cascading replica's slot did not
// exist on its upstream, so it never streamed, and the leader held WAL for
// a slot no one read until its disk filled.)
func TestSlotPlan(t *testing.T) {
	now := t0
	cluster := func(aState string) *dcs.Cluster {
		return &dcs.Cluster{Leader: &dcs.Leader{Name: "l"}, Members: []dcs.Member{
			{Name: "l", Role: "primary", State: "running", ConnURL: "postgres://l:5432/postgres"},
			{Name: "a", Role: "replica", State: aState, ConnURL: "postgres://a:5432/postgres"},
			{Name: "b", Role: "replica", State: "running", ConnURL: "postgres://b:5432/postgres", Tags: map[string]string{"replicatefrom": "a"}},
		}}
	}
	seen := map[string]time.Time{"l": now, "a": now, "b": now, "recent": now.Add(-5 * time.Minute), "old": now.Add(-40 * time.Minute)}
	cases := []struct {
		name       string
		c          *dcs.Cluster
		self       string
		want, keep []string
	}{
		{"the leader keeps slots only for members streaming from it", cluster("running"), "l", []string{"a"}, []string{"recent"}},
		{"the cascade source keeps the slot of the member cascading from it", cluster("running"), "a", []string{"b"}, []string{"recent"}},
		{"a member with no one cascading from it keeps none", cluster("running"), "b", nil, []string{"recent"}},
		{"its source down, the cascading member falls back to the leader, slot and all", cluster("stopped"), "l", []string{"a", "b"}, []string{"recent"}},
		{"... and the stopped source wants none", cluster("stopped"), "a", nil, []string{"recent"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, keep := slotPlan(tc.c, tc.self, "l", seen, now, 30*time.Minute)
			if !slices.Equal(want, tc.want) || !slices.Equal(keep, tc.keep) {
				t.Fatalf("slotPlan = want %v keep %v; want want %v keep %v", want, keep, tc.want, tc.keep)
			}
		})
	}
}
