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

// slotState is what the slots' bookkeeping carries between steps.
type slotState struct {
	// seen is when each member was last in the cluster view.
	seen map[string]time.Time
	// applied is the plan the server's slots were last made to match, at.
	applied string
	at      time.Time
}

// slotsRun is what syncSlots did: the plan it made the server's slots
// match, At (zero: it made none match).
type slotsRun struct {
	Plan string
	At   time.Time
}

// next is the state once r ran.
func (s slotState) next(r slotsRun) slotState {
	if r.At.IsZero() {
		return s
	}
	s.applied, s.at = r.Plan, r.At
	return s
}

// seeMembers is seen (when each member was last in the cluster view, not
// modified) once c was read at now; a member gone for forget is dropped
// from it: long gone, no slot is kept for it anywhere.
func seeMembers(seen map[string]time.Time, c *dcs.Cluster, now time.Time, forget time.Duration) map[string]time.Time {
	next := make(map[string]time.Time, max(len(seen), len(c.Members)))
	for name, at := range seen {
		if c.Member(name) != nil || now.Sub(at) < forget {
			next[name] = at
		}
	}
	for _, m := range c.Members {
		next[m.Name] = now
	}
	return next
}

// slotsRecheck is how often a replica's slots are compared with its plan
// when the plan did not change.
const slotsRecheck = 30 * time.Second

// syncSlots makes this server's slots what the plan says, logging each
// slot dropped; only when the plan changed, or every slotsRecheck. It
// returns the plan it applied.
func (a *Agent) syncSlots(ctx context.Context, c *dcs.Cluster, leader string) slotsRun {
	if !a.s.UseSlots {
		return slotsRun{}
	}
	now := a.d.Clock.Now()
	want, keep := slotPlan(c, a.s.Name, leader, a.st.slots.seen, now, a.s.SlotsTTL)
	plan := strings.Join(want, ",") + "|" + strings.Join(keep, ",")
	if plan == a.st.slots.applied && now.Sub(a.st.slots.at) < slotsRecheck {
		return slotsRun{}
	}
	dropped, busy, err := a.d.Postgres.SyncSlots(ctx, want, keep)
	for _, name := range dropped {
		a.log.Info("replication slot dropped: no member streams from this node with it (gone longer than member_slots_ttl, or streaming elsewhere)", "slot", name, "ttl", a.s.SlotsTTL)
	}
	if err != nil {
		a.log.Warn("cannot sync replication slots", "error", err)
		return slotsRun{}
	}
	if len(busy) > 0 {
		// A member still streams with a slot it should not need here (it
		// is moving to its replicatefrom source): look again next loop.
		return slotsRun{}
	}
	return slotsRun{Plan: plan, At: now}
}
