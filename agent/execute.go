package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// Outcome is what an action left behind: the facts publish and the
// watchdog go by, never the action that was attempted, and what the loop's
// state carries on (advance folds it in).
type Outcome struct {
	// KeyHeld: this member holds the leader key, as far as the action
	// found out (a lost race or a lost key say false).
	KeyHeld bool
	// PG is PostgreSQL's state after the action.
	PG  PGState
	Err error
	// Did is what the action's effects changed that later steps go by.
	Did effects
}

// pgChanging are the actions after which PostgreSQL is observed again.
func pgChanging(a Action) bool {
	switch a {
	case ActWait, ActRefuse, ActHeartbeat, ActClearFailover, ActRefuseReinitialize:
		return false
	}
	return true
}

// execute performs d and returns its outcome. Failures are logged and
// reported through the next observation: the loop retries by deciding
// again. While the action runs the step's keeper renews the lease (and
// re-arms the watchdog), so an action is cut short by the lease only when
// etcd really cannot be reached.
func (a *Agent) execute(ctx context.Context, o Observation, d Decision) Outcome {
	out := Outcome{KeyHeld: o.leaderName() == a.s.Name, PG: o.PG}
	switch d.Action {
	case ActClone, ActStartReplica, ActRewind, ActReinitialize:
		// Announce this member before a long replica action: a restarted
		// agent whose old member key expired is otherwise unknown to the
		// leader, which then creates no replication slot for it, and a
		// standby started with that slot can never stream, so the action
		// never ends.
		if o.Cluster.Member(a.s.Name) == nil {
			out.Did.Member = a.touchMember(ctx, a.memberRecord(o.PG), a.d.Clock.Now())
		}
		// PostgreSQL is down or a standby: an expired watchdog (still
		// fencing whatever starts) must let the standby start.
		a.setGuard(false)
	case ActBootstrap, ActAdopt, ActStartPrimary:
		// It becomes writable during the action: armed to the lease first.
		a.setGuard(true)
	}
	switch d.Action {
	case ActStartReplica, ActStartPrimary, ActRestart:
		// Peers read this node's state from its snapshot, which is
		// otherwise the one from before the action: a race must see that
		// this server is coming up (and may be ahead: a restarted standby
		// may stream more than it had), not the position it had before.
		st := *a.Status()
		st.State, st.Action, st.Reason = "starting", d.Action.String(), d.Reason
		a.storeStatus(&st)
		if d.Action == ActRestart {
			a.setGuard(o.PG.MayWrite())
		}
	}
	var err error
	switch d.Action {
	case ActWait:
		if o.PG.Standby() && o.leaderName() != "" && o.leaderName() != a.s.Name {
			// Members that cascade from this replica stream with a slot
			// here.
			out.Did.Slots = a.syncSlots(ctx, o.Cluster, o.leaderName())
		}
	case ActRefuse:
	case ActBootstrap:
		out.KeyHeld, err = a.bootstrap(ctx)
	case ActAdopt:
		out.KeyHeld, err = a.adopt(ctx, o)
	case ActClone:
		err = a.steerWhile(ctx, d, func() error {
			if !o.PG.DataEmpty {
				up, err := a.upstream(o.Cluster, d.Target)
				if err != nil {
					return fmt.Errorf("re-clone: %w", err)
				}
				a.log.Warn("removing the data directory to re-clone", "source", d.Target, "reason", d.Reason)
				if err := a.wipeForClone(ctx, up); err != nil {
					return err
				}
			}
			return a.clone(ctx, o.Cluster, d.Target)
		})
	case ActStartReplica:
		err = a.steerWhile(ctx, d, func() error { return a.startReplica(ctx, o.Cluster, d.Target) })
	case ActFollow:
		err = a.follow(ctx, o.Cluster, d.Target)
	case ActRewind:
		err = a.steerWhile(ctx, d, func() error { return a.rewind(ctx, o.Cluster, d.Target) })
	case ActHeartbeat:
		out.KeyHeld, err = a.heartbeat(ctx, o, &out.Did)
	case ActAcquire:
		out.KeyHeld, err = a.acquire(ctx, o, &out.Did)
	case ActStartPrimary:
		out.KeyHeld, err = a.startPrimary(ctx)
	case ActRelease:
		if o.Cluster == nil && a.d.Clock.Now().Sub(a.st.blindRelease) < o.Dynamic.TTL.D() {
			// A blind release was tried within the ttl: the pooler, the
			// hooks and etcd need not hear it every loop of an outage.
			break
		}
		if o.Cluster == nil {
			out.Did.BlindRelease = a.d.Clock.Now()
		}
		out.KeyHeld, err = a.release(ctx, d.Reason)
		// A blind release (no DCS view) that failed says nothing of who
		// holds the key now: not this member, as far as it knows.
		out.KeyHeld = out.KeyHeld && o.leaderName() == a.s.Name
	case ActDemote:
		err = a.demote(ctx, d.Reason)
	case ActFence:
		err = a.fence(ctx, d.Reason)
	case ActSwitchover:
		out.KeyHeld, err = a.switchover(ctx, o, d.Target)
	case ActClearFailover:
		err = a.d.DCS.DeleteFailover(ctx, o.Cluster.Failover.Revision)
	case ActRestart:
		out.KeyHeld, err = a.restart(ctx, o)
	case ActReinitialize:
		err = a.steerWhile(ctx, d, func() error { return a.reinitialize(ctx, o.Cluster, d.Target) })
		a.reinits.finish(err)
	case ActRefuseReinitialize:
		a.reinits.finish(fmt.Errorf("%w: %s", ErrPrecondition, d.Reason))
	}
	out.Err = err
	if pgChanging(d.Action) {
		// The action changed PostgreSQL: report what it is now.
		if st, serr := a.d.Postgres.State(ctx); serr == nil {
			out.PG = st
		}
	}
	if o.Cluster != nil {
		a.steerPooler(ctx, o, d, out)
	}
	return out
}

func (a *Agent) fire(event string, ok bool, details string) {
	if a.d.Hooks != nil {
		a.d.Hooks.Fire(event, ok, details)
	}
}

// bootstrap reports whether it took the leader key.
func (a *Agent) bootstrap(ctx context.Context) (bool, error) {
	claim, err := a.d.DCS.Initialize(ctx, "")
	if err != nil || claim == 0 {
		return false, err
	}
	a.log.Info("won the initialize race: creating the cluster")
	if err := a.createCluster(ctx, claim); err != nil {
		a.fire("bootstrap", false, err.Error())
		// Give the race back so another node (or this one, after the
		// cause is fixed) can try again from a clean state; only our own
		// claim (if it expired meanwhile, another node may be creating
		// the cluster now).
		_ = a.d.DCS.CancelInitialize(ctx, claim)
		_ = a.d.Postgres.Fence(ctx)
		_ = a.d.Postgres.Wipe(ctx)
		return false, fmt.Errorf("bootstrap: %w", err)
	}
	a.fire("bootstrap", true, "")
	return true, nil
}

func (a *Agent) createCluster(ctx context.Context, claim int64) error {
	if err := a.d.Postgres.Bootstrap(ctx); err != nil {
		return err
	}
	if err := a.startAsPrimary(ctx); err != nil {
		return err
	}
	if err := a.d.Postgres.CreateRoles(ctx); err != nil {
		return err
	}
	st, err := a.d.Postgres.State(ctx)
	if err != nil {
		return fmt.Errorf("read new cluster state: %w", err)
	}
	return a.register(ctx, st.SystemID, claim)
}

// register writes the initial dynamic configuration (if none) and the
// sync key, takes the leader key, and last records the system identifier
// over this node's claim (the revision its Initialize returned: a claim
// that expired meanwhile may now be another node's, which must not be
// overwritten). Until that last write the claim goes with this agent's
// lease: a registration cut short (etcd lost, the agent killed) leaves the
// race open, not a cluster recorded as initialized with no data anywhere.
func (a *Agent) register(ctx context.Context, sysid string, claim int64) error {
	c, err := a.d.DCS.Cluster(ctx)
	if err != nil {
		return fmt.Errorf("read cluster: %w", err)
	}
	if c.Config == nil {
		raw, err := json.Marshal(a.s.Initial)
		if err != nil {
			return fmt.Errorf("encode dynamic config: %w", err)
		}
		if err := a.d.DCS.SetConfig(ctx, raw, 0); err != nil && !errors.Is(err, dcs.ErrKeyModified) {
			return fmt.Errorf("write dynamic config: %w", err)
		}
	}
	// The sync key names the first leader from the start: in synchronous
	// mode it is the one member known to have every commit until the
	// heartbeat names a standby.
	var syncRev int64
	if c.Sync != nil {
		syncRev = c.Sync.Revision
	}
	if err := a.d.DCS.SetSync(ctx, dcs.Sync{Leader: a.s.Name}, syncRev); err != nil {
		return fmt.Errorf("write sync key: %w", err)
	}
	won, err := a.d.DCS.AcquireLeader(ctx)
	if err != nil {
		return fmt.Errorf("take leader key: %w", err)
	}
	if !won {
		return errors.New("take leader key: held by another member")
	}
	if err := a.d.DCS.SetInitialize(ctx, sysid, claim); err != nil {
		_ = a.d.DCS.ReleaseLeader(ctx)
		return fmt.Errorf("record system identifier: %w", err)
	}
	a.log.Info("cluster created", "system_id", sysid)
	return nil
}

// adopt reports whether it took the leader key.
func (a *Agent) adopt(ctx context.Context, o Observation) (bool, error) {
	claim, err := a.d.DCS.Initialize(ctx, o.PG.SystemID)
	if err != nil || claim == 0 {
		return false, err
	}
	if !o.PG.Running {
		if err := a.startAsPrimary(ctx); err != nil {
			return false, fmt.Errorf("adopt: %w", err)
		}
	}
	if err := a.register(ctx, o.PG.SystemID, claim); err != nil {
		return false, err
	}
	return true, nil
}

func (a *Agent) clone(ctx context.Context, c *dcs.Cluster, from string) error {
	up, err := a.upstream(c, from)
	if err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	if err := bounded(ctx, a.s.CloneTimeout, "postgres.clone_timeout", func(ctx context.Context) error {
		return a.d.Postgres.Clone(ctx, up)
	}); err != nil {
		return fmt.Errorf("clone from %s: %w", from, err)
	}
	return a.startPG(ctx, &up)
}

func (a *Agent) startReplica(ctx context.Context, c *dcs.Cluster, target string) error {
	up := Upstream{}
	if target != "" {
		var err error
		if up, err = a.upstream(c, target); err != nil {
			return fmt.Errorf("start replica: %w", err)
		}
	}
	return a.startPG(ctx, &up)
}

func (a *Agent) follow(ctx context.Context, c *dcs.Cluster, target string) error {
	up, err := a.upstream(c, target)
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	err = a.d.Postgres.Follow(ctx, up)
	a.fire("follow", err == nil, target)
	return err
}

func (a *Agent) rewind(ctx context.Context, c *dcs.Cluster, target string) error {
	up, err := a.upstream(c, target)
	if err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	// A running replica found diverged is stopped first: pg_rewind and
	// re-cloning both need it down.
	if err := a.stop(ctx, "before rewinding"); err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	if a.s.UsePgRewind {
		err = bounded(ctx, a.s.RewindTimeout, "postgres.rewind_timeout", func(ctx context.Context) error {
			return a.d.Postgres.Rewind(ctx, up)
		})
		if err == nil {
			return a.startPG(ctx, &up)
		}
		if !reclonesAfterRewind(err) {
			return fmt.Errorf("rewind from %s: %w", target, err)
		}
		a.log.Warn("rewind impossible: re-cloning", "source", target, "error", err)
	}
	if err := a.wipeForClone(ctx, up); err != nil {
		return err
	}
	return a.clone(ctx, c, target)
}

// reinitialize rebuilds this replica from the leader: stopped, wiped and
// cloned again (an operator's request, for a replica whose data went bad).
func (a *Agent) reinitialize(ctx context.Context, c *dcs.Cluster, leader string) error {
	a.log.Warn("reinitializing: removing the data directory to clone it again", "source", leader)
	if err := a.stop(ctx, "reinitialize"); err != nil {
		return fmt.Errorf("reinitialize: %w", err)
	}
	if err := a.d.Postgres.Wipe(ctx); err != nil {
		return fmt.Errorf("reinitialize: wipe data directory: %w", err)
	}
	return a.clone(ctx, c, leader)
}

// wipeForClone removes the data directory before a re-clone, only once
// the source answers as a running primary: wiping for a clone that then
// cannot run would destroy the only copy of this data.
func (a *Agent) wipeForClone(ctx context.Context, up Upstream) error {
	if a.d.Probe != nil {
		pctx, cancel := context.WithTimeout(ctx, a.s.PeerTimeout)
		r := a.d.Probe.Probe(pctx, net.JoinHostPort(up.Host, strconv.Itoa(up.Port)))
		cancel()
		if r != ProbePrimary {
			return fmt.Errorf("not re-cloning from %s: it does not answer as a running primary; the data directory is kept", up.Name)
		}
	}
	if err := a.d.Postgres.Wipe(ctx); err != nil {
		return fmt.Errorf("wipe before re-clone: %w", err)
	}
	return nil
}

// heartbeat reports whether the key is still held; did gets what its
// synchronous-mode and slot bookkeeping did.
func (a *Agent) heartbeat(ctx context.Context, o Observation, did *effects) (bool, error) {
	if err := a.d.DCS.UpdateLeader(ctx); err != nil {
		if leaderKeyLost(err) {
			return false, a.fence(ctx, "leader key lost")
		}
		return true, fmt.Errorf("renew leadership: %w", err)
	}
	// The leader's WAL position is recorded when it moved (each heartbeat
	// is at most one per loop), not restated when idle.
	st := dcs.Status{LSN: o.PG.WAL, Time: o.Now, Leader: a.s.Name, ConnURL: a.memberRecord(o.PG).ConnURL}
	if cur := o.Cluster; cur == nil || cur.Status.LSN != st.LSN || cur.Status.Leader != st.Leader || cur.Status.ConnURL != st.ConnURL {
		if err := a.d.DCS.SetStatus(ctx, st); err != nil {
			a.log.Warn("cannot record leader wal position", "error", err)
		}
	}
	if o.Cluster != nil {
		a.publishFailsafe(ctx, o.Cluster)
	}
	var err error
	if did.Sync, err = a.manageSync(ctx, o.Cluster); err != nil {
		a.log.Warn("cannot manage synchronous standbys", "error", err)
	}
	did.Slots = a.syncSlots(ctx, o.Cluster, a.s.Name)
	return true, nil
}

// acquire takes the leader key (when it is free) and promotes a standby;
// it reports whether this member holds the key afterwards, and in did the
// replay it waits for, the promotion and its synchronous-mode bookkeeping.
func (a *Agent) acquire(ctx context.Context, o Observation, did *effects) (bool, error) {
	if o.Cluster.Leader == nil {
		won, err := a.d.DCS.AcquireLeader(ctx)
		if err != nil {
			return false, fmt.Errorf("take leader key: %w", err)
		}
		if !won {
			a.log.Info("another member took the leader key first")
			return false, nil
		}
	} else if err := a.d.DCS.UpdateLeader(ctx); err != nil {
		// The key may be bound to the lease of an earlier agent process
		// (killed while it was promoting): bound to ours before this
		// server becomes writable, or that old lease's expiry would let
		// another member take it meanwhile.
		return !errors.Is(err, dcs.ErrNotLeader), fmt.Errorf("take over the leader key: %w", err)
	}
	if !o.PG.InRecovery {
		return true, nil
	}
	// Promotion first replays all WAL received. Done here, with the
	// watchdog armed for the lease, a long replay would outlast the lease
	// and be fenced; the loop waits instead, renewing the lease, while
	// replay makes progress.
	wait, seen := replayWaitStep(o.PG, a.st.replayWait)
	if wait && a.st.replayWait == 0 {
		a.log.Info("leader key taken: waiting for WAL replay before promoting", "received", o.PG.WAL, "replayed", o.PG.Replayed)
	}
	if did.Replay, did.ReplayWait = true, seen; wait {
		return true, nil
	}
	if err := a.prepareSyncPromotion(ctx, o.Cluster); err != nil {
		return a.giveUpKey(ctx), fmt.Errorf("promote: %w", err)
	}
	event, source := "failover", ""
	if f := o.Cluster.Failover; f != nil && f.Candidate == a.s.Name && f.Kind == "switchover" {
		event, source = "switchover", f.Source
		if f.Requested == "failover" {
			event = "failover"
		}
	}
	// The new timeline's ID is taken in the DCS before it exists: two
	// promotions that could not see each other's (an etcd outage, a dead
	// leader that never published) must not both create timeline N with
	// different WAL. PostgreSQL picks the highest ID whose history file it
	// has, plus one: the IDs below are reserved in pg_wal.
	newTLI := highestTimelineID(o) + 1
	if newTLI-1 > o.PG.Timeline {
		if err := a.d.Postgres.ReserveTimelines(ctx, newTLI-1); err != nil {
			return a.giveUpKey(ctx), fmt.Errorf("promote: reserve timeline IDs up to %d: %w", newTLI-1, err)
		}
	}
	intent := dcs.HistoryEntry{Timeline: newTLI, LSN: o.PG.WAL, Parent: o.PG.Timeline, Reason: event, Time: a.d.Clock.Now(), NewLeader: a.s.Name, Pending: true}
	if err := a.d.DCS.AppendHistory(ctx, intent); err != nil {
		return a.giveUpKey(ctx), fmt.Errorf("promote: record timeline %d first: %w", newTLI, err)
	}
	// Where the next race must look for a primary that may outlive this
	// agent, before this server is one.
	if err := a.d.DCS.SetStatus(ctx, dcs.Status{LSN: o.PG.WAL, Time: a.d.Clock.Now(), Leader: a.s.Name, ConnURL: a.memberRecord(o.PG).ConnURL}); err != nil {
		return a.giveUpKey(ctx), fmt.Errorf("promote: record this leader's address first: %w", err)
	}
	// Armed to the lease before the server becomes writable.
	a.setGuard(true)
	if why := a.leaseUnsafe(); why != "" {
		return a.giveUpKey(ctx), fmt.Errorf("promote: not now: %s", why)
	}
	if err := a.d.Postgres.Promote(ctx); err != nil {
		a.fire("promote", false, err.Error())
		// Promotion may have gone through although the wait failed.
		if ferr := a.d.Postgres.Fence(ctx); ferr != nil {
			return true, errors.Join(fmt.Errorf("promote: %w", err), fmt.Errorf("fence after failed promotion: %w", ferr))
		}
		return a.giveUpKey(ctx), fmt.Errorf("promote: %w", err)
	}
	// The lease may have been lost while promoting (etcd unreachable):
	// then the key is gone, and so must the writes be.
	if err := a.d.DCS.UpdateLeader(ctx); leaderKeyLost(err) {
		return false, errors.Join(fmt.Errorf("promoted but the leader key is lost: %w", err), a.fence(ctx, "leader key lost during promotion"))
	}
	var err error
	if did.Sync, err = a.afterSyncPromotion(ctx); err != nil {
		a.log.Warn("cannot set synchronous standbys after promotion", "error", err)
	}
	did.Promoted = true
	a.fire("promote", true, "")
	a.fire(event, true, "")
	st, err := a.d.Postgres.State(ctx)
	if err == nil {
		if st.Timeline != newTLI {
			a.log.Error("promoted to another timeline than recorded", "timeline", st.Timeline, "recorded", newTLI)
		}
		h := intent
		h.Timeline, h.Pending = st.Timeline, false
		if err := a.d.DCS.AppendHistory(ctx, h); err != nil {
			a.log.Warn("cannot append history", "error", err)
		}
	}
	if f := o.Cluster.Failover; f != nil {
		if err := a.d.DCS.DeleteFailover(ctx, f.Revision); err != nil {
			a.log.Warn("cannot clear failover request", "error", err)
		}
	}
	if source != "" {
		a.log.Info("promoted", "timeline", st.Timeline, "action", event, "source", source)
	} else {
		a.log.Info("promoted", "timeline", st.Timeline)
	}
	return true, nil
}

// giveUpKey releases the leader key and reports whether it is still held.
func (a *Agent) giveUpKey(ctx context.Context) bool {
	err := a.d.DCS.ReleaseLeader(ctx)
	return err != nil && !errors.Is(err, dcs.ErrNotLeader)
}

// startPrimary restarts a crashed primary in place while holding the key;
// it reports whether the key is still held afterwards. Crash recovery can
// take long: the keeper renews the lease meanwhile and the watchdog is
// armed to it, so a lease that lapses (etcd unreachable) fences the
// recovering server rather than letting it come up beside a new primary.
func (a *Agent) startPrimary(ctx context.Context) (bool, error) {
	// The key may still be bound to the lease of an earlier agent process
	// (restarted after a crash), whose expiry this process cannot see:
	// bind it to our own lease before writes can start, so the deadline
	// the watchdog is armed to is the key's.
	if err := a.d.DCS.UpdateLeader(ctx); err != nil {
		return !errors.Is(err, dcs.ErrNotLeader), fmt.Errorf("start primary: %w", err)
	}
	if err := a.startAsPrimary(ctx); err != nil {
		return true, fmt.Errorf("start primary: %w", err)
	}
	if err := a.d.DCS.UpdateLeader(ctx); leaderKeyLost(err) {
		return false, errors.Join(fmt.Errorf("started as primary but the leader key is lost: %w", err), a.fence(ctx, "leader key lost during start"))
	}
	return true, nil
}

// release hands leadership over when PostgreSQL would not come back: it is
// fenced first (a server that might still accept writes keeps the key), then
// the key is deleted. It reports whether the key is still held.
func (a *Agent) release(ctx context.Context, reason string) (bool, error) {
	if err := a.d.Postgres.Fence(ctx); err != nil {
		return true, fmt.Errorf("release: fence first: %w", err)
	}
	a.steer.fence(ctx)
	err := a.d.DCS.ReleaseLeader(ctx)
	a.fire("lost_lock", err == nil, reason)
	if err != nil && !errors.Is(err, dcs.ErrNotLeader) {
		return true, fmt.Errorf("release leader key: %w", err)
	}
	return false, nil
}

// restart restarts PostgreSQL for an operator; on a primary it reports
// whether the key is still held afterwards.
func (a *Agent) restart(ctx context.Context, o Observation) (bool, error) {
	held := o.leaderName() == a.s.Name
	err := a.d.Postgres.Restart(ctx)
	a.restarts.finish(err)
	if err != nil {
		a.fire("restart", false, err.Error())
		return held, fmt.Errorf("restart postgres: %w", err)
	}
	a.fire("restart", true, "")
	if held {
		if uerr := a.d.DCS.UpdateLeader(ctx); leaderKeyLost(uerr) {
			return false, errors.Join(fmt.Errorf("restarted but the leader key is lost: %w", uerr), a.fence(ctx, "leader key lost during restart"))
		}
	}
	return held, nil
}

// startAsPrimary starts PostgreSQL as a primary, armed to the lease, and
// only while the lease is safe right now: an agent frozen (or a call
// stalled) past its lease must not bring up a writable server after
// another node may have been promoted.
func (a *Agent) startAsPrimary(ctx context.Context) error {
	a.setGuard(true)
	if why := a.leaseUnsafe(); why != "" {
		return fmt.Errorf("not starting postgres as primary: %s", why)
	}
	return a.startPG(ctx, nil)
}

// startPG starts PostgreSQL (as a standby of up, or as primary when up is
// nil) and fires the start hook.
func (a *Agent) startPG(ctx context.Context, up *Upstream) error {
	err := a.d.Postgres.Start(ctx, up)
	details := "primary"
	if up != nil {
		details = "standby of " + up.Host
	}
	a.fire("start", err == nil, details)
	return err
}

// stopPG stops PostgreSQL cleanly and fires the stop hook.
func (a *Agent) stopPG(ctx context.Context, why string) error {
	err := a.d.Postgres.Stop(ctx, StopFast)
	a.fire("stop", err == nil, why)
	return err
}

// leaseUnsafe says why the lease may not be relied on now ("" when it may).
func (a *Agent) leaseUnsafe() string {
	deadline, _ := a.leaseView()
	o := Observation{Node: a.s.Node, LeaseDeadline: deadline, Now: a.d.Clock.Now()}
	if leaseSafe(o) {
		return ""
	}
	return leaseReason(o)
}

// stop stops PostgreSQL cleanly, and fences it when that fails.
func (a *Agent) stop(ctx context.Context, why string) error {
	err := a.stopPG(ctx, why)
	if err != nil {
		a.log.Warn("clean stop failed: fencing", "error", err)
		if ferr := a.d.Postgres.Fence(ctx); ferr != nil {
			return errors.Join(err, ferr)
		}
	}
	return nil
}

// demote stops this node accepting writes cleanly; PostgreSQL first, then
// the pooler (bounded), so nothing waits on PgBouncer before writes stop.
func (a *Agent) demote(ctx context.Context, reason string) error {
	err := a.stop(ctx, "demote: "+reason)
	a.steer.fence(ctx)
	a.fire("demote", err == nil, reason)
	return err
}

// fence stops PostgreSQL at once: every process of its data directory is
// killed, verified gone. PgBouncer is told afterwards, bounded.
func (a *Agent) fence(ctx context.Context, reason string) error {
	a.log.Warn("fencing: killing postgres", "reason", reason)
	err := a.d.Postgres.Fence(ctx)
	a.steer.fence(ctx)
	a.fire("fence", err == nil, reason)
	a.fire("lost_lock", err == nil, reason)
	return err
}

// steerPooler keeps the local pooler's "primary" entries on the leader.
func (a *Agent) steerPooler(ctx context.Context, o Observation, d Decision, out Outcome) {
	a.steer.follow(ctx, o, out, a.s.Name)
}

// busySteerPoll is how often the pooler is steered while the loop is busy
// with a long action.
const busySteerPoll = 100 * time.Millisecond

// steerWhile runs act, a long replica action (rewind, clone, start), while
// a helper keeps the local pooler on the leader: the old leader of a
// switchover rewinds for a second or more right after handing the key
// over, and its host's clients, paused for the handover, must be resumed
// on the new leader as soon as it accepts writes, not after the rewind.
// The helper touches only the pooler's steering state, which has a mutex
// of its own (steer.go), never the loop's.
func (a *Agent) steerWhile(ctx context.Context, d Decision, act func() error) error {
	a.longAction.Store(&d)
	defer a.longAction.Store(nil)
	if a.d.Pooler == nil {
		return act()
	}
	stop := a.d.Clock.Go(func(hctx context.Context) {
		for {
			if c, err := a.d.DCS.Cluster(hctx); err == nil && c.Leader != nil && c.Leader.Name != a.s.Name {
				// ctx, not hctx: a repoint under way is finished, not cut.
				a.steerPooler(ctx, Observation{Cluster: c, Now: a.d.Clock.Now()}, d, Outcome{})
			}
			if a.d.Clock.Sleep(hctx, busySteerPoll) != nil {
				return
			}
		}
	})
	err := act()
	stop()
	return err
}

// awaitPoolersPaused waits (bounded) until every member with a pooler
// reports its primary databases paused, so no client reaches the old
// primary while it shuts down.
func (a *Agent) awaitPoolersPaused(ctx context.Context) {
	deadline := a.d.Clock.Now().Add(a.switchoverWait())
	for {
		c, err := a.d.DCS.Cluster(ctx)
		if err != nil {
			return
		}
		waiting := unpausedPoolers(c, a.s.Name)
		if len(waiting) == 0 {
			return
		}
		if a.d.Clock.Now().After(deadline) || ctx.Err() != nil {
			a.log.Warn("switchover: poolers not paused in time; going on", "members", fmt.Sprint(waiting))
			return
		}
		if a.d.Clock.Sleep(ctx, 20*time.Millisecond) != nil {
			return
		}
	}
}

// switchover hands leadership to target without losing a committed
// transaction: checkpoint, clean shutdown, wait until target has received
// everything up to the shutdown checkpoint, then release the key (the
// failover request naming target keeps the other replicas out of the race).
// switchover reports whether this member still holds the key.
func (a *Agent) switchover(ctx context.Context, o Observation, target string) (bool, error) {
	f := *o.Cluster.Failover
	if f.Candidate != target {
		f.Candidate = target
		if err := a.d.DCS.SetFailover(ctx, f, f.Revision); err != nil {
			return true, fmt.Errorf("switchover: record candidate: %w", err)
		}
	}
	// Checkpoint first, while clients still run, so the shutdown is quick.
	if err := a.d.Postgres.Checkpoint(ctx); err != nil {
		a.log.Warn("switchover: checkpoint failed", "error", err)
	}
	a.steer.pause(ctx)
	a.awaitPoolersPaused(ctx)
	a.log.Info("switchover: stopping postgres cleanly", "candidate", target, "source", f.Source)
	// The watchdog stays armed (the keeper renews the lease) until
	// PostgreSQL is down: a freeze during a long shutdown is fenced too.
	if err := a.stopPG(ctx, "switchover to "+target); err != nil {
		return a.abortSwitchover(ctx, fmt.Errorf("stop postgres: %w", err))
	}
	// Nothing of the data directory may outlive the stop (a backend that
	// outlived a crash of the postmaster, say) once the key is released.
	if err := a.d.Postgres.Fence(ctx); err != nil {
		return a.abortSwitchover(ctx, fmt.Errorf("after the clean stop: %w", err))
	}
	a.setGuard(false)
	lsn, err := a.d.Postgres.ShutdownCheckpoint(ctx)
	if err != nil {
		return a.abortSwitchover(ctx, fmt.Errorf("read shutdown checkpoint: %w", err))
	}
	m := o.Cluster.Member(target)
	deadline := a.d.Clock.Now().Add(a.switchoverWait())
	for {
		if handedOver(a.d.Peers.Fetch(ctx, []dcs.Member{*m}), lsn) {
			break
		}
		if a.d.Clock.Now().After(deadline) || ctx.Err() != nil {
			return a.abortSwitchover(ctx, fmt.Errorf("%s did not receive the shutdown checkpoint %d in time", target, lsn))
		}
		if a.d.Clock.Sleep(ctx, 20*time.Millisecond) != nil {
			return a.abortSwitchover(ctx, ctx.Err())
		}
	}
	// The candidate may skip comparing positions with the others only
	// because of this handover: say it happened.
	f.HandedOver = true
	if cur, err := a.d.DCS.Cluster(ctx); err == nil && cur.Failover != nil {
		if err := a.d.DCS.SetFailover(ctx, f, cur.Failover.Revision); err != nil {
			return a.abortSwitchover(ctx, fmt.Errorf("record the handover: %w", err))
		}
	} else {
		return a.abortSwitchover(ctx, fmt.Errorf("record the handover: the request is gone (%v)", err))
	}
	if err := a.d.DCS.ReleaseLeader(ctx); err != nil {
		return a.abortSwitchover(ctx, fmt.Errorf("release leader key: %w", err))
	}
	a.steer.forget()
	a.log.Info("switchover: leader key released", "candidate", target, "lsn", lsn)
	a.fire("switchover", true, "to "+target)
	return false, nil
}

func (a *Agent) switchoverWait() time.Duration {
	if w := 2 * a.st.dynamic.RetryTimeout.D(); w > 0 {
		return w
	}
	return 6 * time.Second
}

// abortSwitchover restarts this node as primary (it still holds the key) so
// the cluster is left with a working primary, and drops the request. It
// reports whether the key is still held.
func (a *Agent) abortSwitchover(ctx context.Context, cause error) (bool, error) {
	var err error
	uerr := a.d.DCS.UpdateLeader(ctx)
	if uerr == nil {
		a.log.Error("switchover failed: staying primary", "error", cause)
		a.setGuard(true)
		err = a.startAsPrimary(ctx)
	} else {
		// The key is gone: starting as primary could make two writers.
		// The next loop follows whoever leads now.
		a.log.Error("switchover failed and the leader key is lost", "error", cause, "dcs_error", uerr)
	}
	if c, cerr := a.d.DCS.Cluster(ctx); cerr == nil && c.Failover != nil {
		_ = a.d.DCS.DeleteFailover(ctx, c.Failover.Revision)
	}
	a.steer.resumeNow(ctx)
	a.fire("switchover", false, cause.Error())
	return uerr == nil, errors.Join(fmt.Errorf("switchover: %w", cause), err)
}

// bounded runs a long action under its configured deadline (0: none) and
// names the setting when the deadline cut it, so the operator knows which
// bound to raise.
func bounded(ctx context.Context, limit time.Duration, key string, act func(context.Context) error) error {
	if limit <= 0 {
		return act(ctx)
	}
	actx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	err := act(actx)
	if err != nil && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("gave up after %s (%s): %w", limit, key, err)
	}
	return err
}
