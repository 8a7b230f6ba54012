package agent

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// Replication slots: each member's slot lives on the server it streams
// from, the leader or the replica its replicatefrom tag names (falling back
// to the leader while that one does not run). A slot no one reads holds
// WAL for ever, so a member that streams elsewhere has none here, and the
// slot of a member that is gone (its key expired) is kept for
// member_slots_ttl (a restart, a re-clone) and then dropped. PostgreSQL's
// max_slot_wal_keep_size bounds the WAL any slot can hold meanwhile.

// sourceOf is whom member m streams from: the member its replicatefrom
// tag names while that one runs, else the leader.
func sourceOf(c *dcs.Cluster, name, replicateFrom, leader string) string {
	if replicateFrom == "" || replicateFrom == name {
		return leader
	}
	if m := c.Member(replicateFrom); m != nil && m.State == "running" && m.ConnURL != "" {
		return replicateFrom
	}
	return leader
}

// slotPlan is, on node self, the members whose slots must exist here
// (want) and the gone members whose slots may stay a while (keep), from
// when each member was last seen.
func slotPlan(c *dcs.Cluster, self, leader string, lastSeen map[string]time.Time, now time.Time, ttl time.Duration) (want, keep []string) {
	for _, m := range c.Members {
		if m.Name == self {
			continue
		}
		if sourceOf(c, m.Name, m.Tags["replicatefrom"], leader) == self {
			want = append(want, slotName(m.Name))
		}
	}
	for name, seen := range lastSeen {
		if name != self && c.Member(name) == nil && now.Sub(seen) < ttl {
			keep = append(keep, slotName(name))
		}
	}
	slices.Sort(want)
	slices.Sort(keep)
	return want, keep
}

// seeMembers records when each member was last in the cluster view.
func (a *Agent) seeMembers(c *dcs.Cluster) {
	if a.st.slotsSeen == nil {
		a.st.slotsSeen = map[string]time.Time{}
	}
	now := a.d.Clock.Now()
	for _, m := range c.Members {
		a.st.slotsSeen[m.Name] = now
	}
	for name, seen := range a.st.slotsSeen {
		if c.Member(name) == nil && now.Sub(seen) >= max(a.s.SlotsTTL, time.Hour) {
			delete(a.st.slotsSeen, name) // long gone: no slot kept for it anywhere
		}
	}
}

// slotsRecheck is how often a replica's slots are compared with its plan
// when the plan did not change.
const slotsRecheck = 30 * time.Second

// syncSlots makes this server's slots what the plan says, logging each
// slot dropped; only when the plan changed, or every slotsRecheck.
func (a *Agent) syncSlots(ctx context.Context, c *dcs.Cluster, leader string) {
	if !a.s.UseSlots {
		return
	}
	now := a.d.Clock.Now()
	want, keep := slotPlan(c, a.s.Name, leader, a.st.slotsSeen, now, a.s.SlotsTTL)
	plan := strings.Join(want, ",") + "|" + strings.Join(keep, ",")
	if plan == a.st.slotsApplied && now.Sub(a.st.slotsAt) < slotsRecheck {
		return
	}
	dropped, busy, err := a.d.Postgres.SyncSlots(ctx, want, keep)
	for _, name := range dropped {
		a.log.Info("replication slot dropped: no member streams from this node with it (gone longer than member_slots_ttl, or streaming elsewhere)", "slot", name, "ttl", a.s.SlotsTTL)
	}
	if err != nil {
		a.log.Warn("cannot sync replication slots", "error", err)
		return
	}
	if len(busy) > 0 {
		// A member still streams with a slot it should not need here (it
		// is moving to its replicatefrom source): look again next loop.
		return
	}
	a.st.slotsApplied, a.st.slotsAt = plan, now
}
