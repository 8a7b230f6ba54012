package agent

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

// Synchronous mode keeps one invariant: every member named in the sync key
// has every commit the leader acknowledged. Only those members may be
// promoted (see ineligible), so a failover loses no acknowledged commit.
//
// The leader keeps it by ordering its writes: a member leaves the key
// before commits stop waiting for it, and joins the key only after commits
// wait for it and it has flushed past every commit acknowledged before
// that. In between, the key may name fewer members than wait: that only
// narrows who may be promoted.

// AnyStandby, alone in the names given to SetSyncStandbys, has commits
// wait for any one standby (PostgreSQL's syntax for it is the postgres
// side's). Not a valid member name.
const AnyStandby = "(any)"

// SyncStatus is what the primary reports of its synchronous standbys.
type SyncStatus struct {
	// Current is the primary's current WAL position.
	Current wal.LSN
	// Sync maps each standby that commits wait for now (by application
	// name, which is the member name) to the position it has flushed.
	Sync map[string]wal.LSN
	// Streaming are the standbys streaming from the primary itself: only
	// they can be synchronous (a cascaded one never acknowledges to it).
	Streaming map[string]bool
}

// wantSync chooses the n members commits should wait for: the current ones
// while they stay eligible (so the choice is stable), then the best
// replicas by the candidate order. Eligible are the replicas streaming from
// the leader itself (direct): one that cascades through another replica
// (tags.replicatefrom) never appears in the leader's pg_stat_replication,
// and naming it would block every commit.
func wantSync(c *dcs.Cluster, self string, cur []string, n int, direct map[string]bool) []string {
	eligible := map[string]contender{}
	for _, m := range c.Members {
		if m.Name == self || m.Role != "replica" || m.State != "running" || !m.Streaming || m.Priority <= 0 || m.RefusesFailover() || !direct[m.Name] {
			continue
		}
		eligible[m.Name] = contender{Name: m.Name, WAL: m.WALPosition, Priority: m.Priority}
	}
	var want []string
	for _, name := range cur {
		if _, ok := eligible[name]; ok && len(want) < n {
			want = append(want, name)
			delete(eligible, name)
		}
	}
	for len(want) < n {
		var cs []contender
		for _, c := range eligible {
			cs = append(cs, c)
		}
		best, ok := best(cs)
		if !ok {
			break
		}
		want = append(want, best.Name)
		delete(eligible, best.Name)
	}
	return want
}

// syncStep is one step of the leader's synchronous-mode bookkeeping, from
// the sync key's current members, the wanted ones, the names commits wait
// for now (applied), and what PostgreSQL reports. pending records, per
// member, the leader's position when it was first seen synchronous.
type syncStep struct {
	// Key, when WriteKey, is the sync key's new member list.
	Key      []string
	WriteKey bool
	// Names, when Apply, is the new list commits wait for.
	Names []string
	Apply bool
	// Pending is pending as it is after this step (a new map).
	Pending map[string]wal.LSN
}

// planSync is the pure part of manageSync: one change at a time, removals
// from the key first, then the names commits wait for, then additions. It
// does not modify its inputs: the pending positions after the step are in
// the step.
func planSync(key, want, applied []string, strict bool, st SyncStatus, before map[string]wal.LSN) syncStep {
	pending := maps.Clone(before)
	if pending == nil {
		pending = map[string]wal.LSN{}
	}
	keep := slices.DeleteFunc(slices.Clone(key), func(n string) bool {
		_, sync := st.Sync[n]
		return !slices.Contains(want, n) || !sync
	})
	if len(keep) != len(key) {
		return syncStep{Key: keep, WriteKey: true, Pending: pending}
	}
	names := want
	if len(names) == 0 && strict {
		names = []string{AnyStandby} // no acknowledged commit without a standby
	}
	if !slices.Equal(names, applied) {
		// What commits wait for changes: no position seen so far counts.
		return syncStep{Names: names, Apply: true, Pending: map[string]wal.LSN{}}
	}
	for name := range pending {
		if _, ok := st.Sync[name]; !ok || !slices.Contains(want, name) {
			delete(pending, name)
		}
	}
	added := keep
	for _, name := range want {
		flush, sync := st.Sync[name]
		if !sync || slices.Contains(keep, name) {
			continue
		}
		since, seen := pending[name]
		if !seen {
			// Every commit acknowledged before it became synchronous is
			// at or below this position.
			pending[name], since = st.Current, st.Current
		}
		if flush >= since {
			added = append(added, name)
			delete(pending, name)
		}
	}
	if len(added) != len(key) {
		return syncStep{Key: added, WriteKey: true, Pending: pending}
	}
	return syncStep{Pending: pending}
}

// syncState is what the leader's synchronous-mode bookkeeping carries
// between steps.
type syncState struct {
	// applied: names is what commits wait for now (unknown until set once
	// after this agent starts).
	applied bool
	names   []string
	// pending is, per member newly seen synchronous, the leader's position
	// when it was first seen so (see planSync).
	pending map[string]wal.LSN
}

// syncRun is what one round of the bookkeeping did; zero: nothing.
type syncRun struct {
	// Planned: a round was planned, leaving Pending (nil: none).
	Planned bool
	Pending map[string]wal.LSN
	// Set: commits wait for Names now.
	Set   bool
	Names []string
}

// next is the state once r ran.
func (s syncState) next(r syncRun) syncState {
	if r.Planned {
		s.pending = r.Pending
	}
	if r.Set {
		s.applied, s.names = true, r.Names
	}
	return s
}

// manageSync runs on the leader every heartbeat; it returns what it did,
// also when it then failed.
func (a *Agent) manageSync(ctx context.Context, c *dcs.Cluster) (syncRun, error) {
	var key []string
	var rev int64
	ownKey := c.Sync != nil && c.Sync.Leader == a.s.Name
	if c.Sync != nil {
		rev = c.Sync.Revision
	}
	if ownKey {
		key = c.Sync.SyncStandby
	}
	cur := a.st.sync
	if !a.st.dynamic.SynchronousMode {
		var run syncRun
		if !cur.applied || len(cur.names) > 0 {
			if err := a.d.Postgres.SetSyncStandbys(ctx, nil); err != nil {
				return run, err
			}
			run = syncRun{Set: true}
		}
		if c.Sync != nil && (!ownKey || len(key) > 0) {
			return run, a.d.DCS.SetSync(ctx, dcs.Sync{Leader: a.s.Name}, rev)
		}
		return run, nil
	}
	if !ownKey {
		// A key from a former leader says nothing about this one's commits.
		return syncRun{}, a.d.DCS.SetSync(ctx, dcs.Sync{Leader: a.s.Name}, rev)
	}
	st, err := a.d.Postgres.SyncStatus(ctx)
	if err != nil {
		return syncRun{}, err
	}
	want := wantSync(c, a.s.Name, key, max(1, a.st.dynamic.SynchronousNodeCount), st.Streaming)
	applied := cur.names
	if !cur.applied {
		applied = []string{"\x00unknown"} // apply once after start
	}
	step := planSync(key, want, applied, a.st.dynamic.SynchronousModeStrict, st, cur.pending)
	run := syncRun{Planned: true, Pending: step.Pending}
	switch {
	case step.WriteKey:
		a.log.Info("synchronous standbys in the sync key", "members", fmt.Sprint(step.Key), "was", fmt.Sprint(key))
		return run, a.d.DCS.SetSync(ctx, dcs.Sync{Leader: a.s.Name, SyncStandby: step.Key}, rev)
	case step.Apply:
		a.log.Info("commits now wait for", "standbys", fmt.Sprint(step.Names))
		if err := a.d.Postgres.SetSyncStandbys(ctx, step.Names); err != nil {
			return run, err
		}
		run.Set, run.Names = true, step.Names
	}
	return run, nil
}

// prepareSyncPromotion runs before a standby is promoted in synchronous
// mode: the sync key is taken over empty (no one is known to have this
// leader's commits yet).
func (a *Agent) prepareSyncPromotion(ctx context.Context, c *dcs.Cluster) error {
	if !a.st.dynamic.SynchronousMode {
		return nil
	}
	var rev int64
	if c.Sync != nil {
		rev = c.Sync.Revision
	}
	if err := a.d.DCS.SetSync(ctx, dcs.Sync{Leader: a.s.Name}, rev); err != nil {
		return fmt.Errorf("take over the sync key: %w", err)
	}
	return nil
}

// afterSyncPromotion runs right after promotion, before this node
// publishes itself as primary (so no health check routes clients to it
// yet): in strict mode commits wait for any standby until the heartbeat
// names one. Not before promotion: a configuration reload on a standby
// about to be promoted was seen to delay PostgreSQL 15's promotion past
// the lease (the startup process went back to waiting for WAL).
func (a *Agent) afterSyncPromotion(ctx context.Context) (syncRun, error) {
	if !a.st.dynamic.SynchronousMode {
		return syncRun{}, nil
	}
	names := []string{AnyStandby}
	if !a.st.dynamic.SynchronousModeStrict {
		names = nil // as after the first heartbeat with no standby yet
	}
	if err := a.d.Postgres.SetSyncStandbys(ctx, names); err != nil {
		return syncRun{}, err
	}
	// No position seen before the promotion counts for this leader's
	// commits.
	return syncRun{Planned: true, Set: true, Names: names}, nil
}
