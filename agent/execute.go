package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// execute performs d. Failures are logged and reported through the next
// observation: the loop retries by deciding again.
func (a *Agent) execute(ctx context.Context, o Observation, d Decision) {
	switch d.Action {
	case ActClone, ActStartReplica, ActRewind:
		// Announce this member before a long replica action: a restarted
		// agent whose old member key expired is otherwise unknown to the
		// leader, which then creates no replication slot for it, and a
		// standby started with that slot can never stream, so the action
		// never ends.
		if o.Cluster.Member(a.s.Name) == nil {
			a.touchMember(ctx, a.memberRecord(o.PG), a.d.Clock.Now())
		}
	}
	var err error
	switch d.Action {
	case ActWait, ActRefuse:
	case ActBootstrap:
		err = a.bootstrap(ctx)
	case ActAdopt:
		err = a.adopt(ctx, o)
	case ActClone:
		err = a.steerWhile(ctx, d, func() error {
			if !o.PG.DataEmpty {
				a.log.Warn("removing the data directory to re-clone", "member", d.Target, "reason", d.Reason)
				if err := a.d.Postgres.Wipe(ctx); err != nil {
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
		err = a.heartbeat(ctx, o)
	case ActAcquire:
		err = a.acquire(ctx, o)
	case ActStartPrimary:
		// The key may still be bound to the lease of an earlier agent
		// process (restarted after a crash), whose expiry this process
		// cannot see: bind it to our own lease before writes can start,
		// so the deadline the watchdog is armed to is the key's.
		if err = a.d.DCS.UpdateLeader(ctx); err == nil {
			err = a.d.Postgres.Start(ctx, nil)
		}
	case ActRelease:
		a.poolerFence(ctx)
		err = a.d.DCS.ReleaseLeader(ctx)
		a.fire("lost_lock", err == nil, d.Reason)
	case ActDemote:
		err = a.demote(ctx, d.Reason)
	case ActFence:
		err = a.fence(ctx, d.Reason)
	case ActSwitchover:
		err = a.switchover(ctx, o, d.Target)
	case ActClearFailover:
		err = a.d.DCS.DeleteFailover(ctx, o.Cluster.Failover.Revision)
	}
	if err != nil {
		a.log.Error("action failed", "action", d.Action.String(), "target", d.Target, "error", err)
	}
	switch d.Action {
	case ActStartReplica, ActRewind, ActClone:
		if err != nil && d.Target != "" {
			a.startFails++
		} else if err == nil {
			a.startFails = 0
		}
	}
	if o.Cluster != nil {
		a.steerPooler(ctx, o, d)
	}
}

func (a *Agent) fire(event string, ok bool, details string) {
	if a.d.Hooks != nil {
		a.d.Hooks.Fire(event, ok, details)
	}
}

func (a *Agent) bootstrap(ctx context.Context) error {
	won, err := a.d.DCS.Initialize(ctx, "")
	if err != nil || !won {
		return err
	}
	a.log.Info("won the initialize race: creating the cluster")
	if err := a.createCluster(ctx); err != nil {
		a.fire("bootstrap", false, err.Error())
		// Give the race back so another node (or this one, after the
		// cause is fixed) can try again from a clean state.
		if c, cerr := a.d.DCS.Cluster(ctx); cerr == nil {
			_ = a.d.DCS.CancelInitialize(ctx, c.InitializeRevision)
		}
		_ = a.d.Postgres.Stop(ctx, StopImmediate)
		_ = a.d.Postgres.Wipe(ctx)
		return fmt.Errorf("bootstrap: %w", err)
	}
	a.fire("bootstrap", true, "")
	return nil
}

func (a *Agent) createCluster(ctx context.Context) error {
	if err := a.d.Postgres.Bootstrap(ctx); err != nil {
		return err
	}
	st, err := a.d.Postgres.State(ctx)
	if err != nil {
		return fmt.Errorf("read new cluster state: %w", err)
	}
	return a.register(ctx, st.SystemID)
}

// register records the system identifier, writes the initial dynamic
// configuration (if none) and takes the leader key.
func (a *Agent) register(ctx context.Context, sysid string) error {
	c, err := a.d.DCS.Cluster(ctx)
	if err != nil {
		return fmt.Errorf("read cluster: %w", err)
	}
	if err := a.d.DCS.SetInitialize(ctx, sysid, c.InitializeRevision); err != nil {
		return fmt.Errorf("record system identifier: %w", err)
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
	a.log.Info("cluster created", "system_id", sysid)
	return nil
}

func (a *Agent) adopt(ctx context.Context, o Observation) error {
	won, err := a.d.DCS.Initialize(ctx, o.PG.SystemID)
	if err != nil || !won {
		return err
	}
	if !o.PG.Running {
		if err := a.d.Postgres.Start(ctx, nil); err != nil {
			return fmt.Errorf("adopt: start postgres: %w", err)
		}
	}
	return a.register(ctx, o.PG.SystemID)
}

func (a *Agent) clone(ctx context.Context, c *dcs.Cluster, from string) error {
	up, err := a.upstream(c, from)
	if err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	if err := a.d.Postgres.Clone(ctx, up); err != nil {
		return fmt.Errorf("clone from %s: %w", from, err)
	}
	return a.d.Postgres.Start(ctx, &up)
}

func (a *Agent) startReplica(ctx context.Context, c *dcs.Cluster, target string) error {
	up := Upstream{}
	if target != "" {
		var err error
		if up, err = a.upstream(c, target); err != nil {
			return fmt.Errorf("start replica: %w", err)
		}
	}
	return a.d.Postgres.Start(ctx, &up)
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
	if err := a.d.Postgres.Stop(ctx, StopFast); err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	if a.s.UsePgRewind {
		err = a.d.Postgres.Rewind(ctx, up)
		if err == nil {
			return a.d.Postgres.Start(ctx, &up)
		}
		a.log.Warn("rewind failed: re-cloning", "member", target, "error", err)
	}
	if err := a.d.Postgres.Wipe(ctx); err != nil {
		return fmt.Errorf("wipe before re-clone: %w", err)
	}
	return a.clone(ctx, c, target)
}

func (a *Agent) heartbeat(ctx context.Context, o Observation) error {
	if err := a.d.DCS.UpdateLeader(ctx); err != nil {
		if errors.Is(err, dcs.ErrNotLeader) {
			// Someone else holds the key now: stop writes at once rather
			// than at the next loop.
			return a.fence(ctx, "leader key lost")
		}
		return fmt.Errorf("renew leadership: %w", err)
	}
	if err := a.d.DCS.SetStatus(ctx, dcs.Status{LSN: o.PG.WAL, Time: o.Now}); err != nil {
		a.log.Warn("cannot record leader wal position", "error", err)
	}
	if err := a.manageSync(ctx, o.Cluster); err != nil {
		a.log.Warn("cannot manage synchronous standbys", "error", err)
	}
	if a.s.UseSlots {
		var names []string
		for _, m := range o.Cluster.Members {
			if m.Name != a.s.Name {
				names = append(names, SlotName(m.Name))
			}
		}
		if err := a.d.Postgres.SyncSlots(ctx, names); err != nil {
			a.log.Warn("cannot sync replication slots", "error", err)
		}
	}
	return nil
}

func (a *Agent) acquire(ctx context.Context, o Observation) error {
	if o.Cluster.Leader == nil {
		won, err := a.d.DCS.AcquireLeader(ctx)
		if err != nil {
			return fmt.Errorf("take leader key: %w", err)
		}
		if !won {
			a.log.Info("another member took the leader key first")
			return nil
		}
	}
	if !o.PG.InRecovery {
		return nil
	}
	// Promotion first replays all WAL received. Done here, with the
	// watchdog armed for the lease, a long replay would outlast the lease
	// and be fenced; the loop waits instead, renewing the lease, while
	// replay makes progress.
	if pg := o.PG; pg.Replayed < pg.WAL && pg.Replayed != a.replayWait {
		if a.replayWait == 0 {
			a.log.Info("leader key taken: waiting for WAL replay before promoting", "received", pg.WAL, "replayed", pg.Replayed)
		}
		a.replayWait = pg.Replayed
		return nil
	}
	a.replayWait = 0
	if err := a.prepareSyncPromotion(ctx, o.Cluster); err != nil {
		_ = a.d.DCS.ReleaseLeader(ctx)
		return fmt.Errorf("promote: %w", err)
	}
	// Arm the watchdog before the server becomes writable.
	a.feedWatchdog(PGState{Running: true}, o.Dynamic.Pause)
	event := "failover"
	if f := o.Cluster.Failover; f != nil && f.Candidate == a.s.Name && f.Kind == "switchover" {
		event = "switchover"
	}
	if err := a.d.Postgres.Promote(ctx); err != nil {
		a.fire("promote", false, err.Error())
		_ = a.d.DCS.ReleaseLeader(ctx)
		return fmt.Errorf("promote: %w", err)
	}
	if err := a.afterSyncPromotion(ctx); err != nil {
		a.log.Warn("cannot set synchronous standbys after promotion", "error", err)
	}
	a.failovers++
	a.fire("promote", true, "")
	a.fire(event, true, "")
	st, err := a.d.Postgres.State(ctx)
	if err == nil {
		h := dcs.HistoryEntry{Timeline: st.Timeline, LSN: o.PG.WAL, Reason: event, Time: a.d.Clock.Now(), NewLeader: a.s.Name}
		if err := a.d.DCS.AppendHistory(ctx, h); err != nil {
			a.log.Warn("cannot append history", "error", err)
		}
	}
	if f := o.Cluster.Failover; f != nil {
		if err := a.d.DCS.DeleteFailover(ctx, f.Revision); err != nil {
			a.log.Warn("cannot clear failover request", "error", err)
		}
	}
	a.log.Info("promoted", "timeline", st.Timeline)
	return nil
}

func (a *Agent) demote(ctx context.Context, reason string) error {
	a.poolerFence(ctx)
	err := a.d.Postgres.Stop(ctx, StopFast)
	if err != nil {
		err = errors.Join(err, a.d.Postgres.Stop(ctx, StopImmediate))
	}
	a.fire("demote", err == nil, reason)
	return err
}

func (a *Agent) fence(ctx context.Context, reason string) error {
	a.log.Warn("fencing: stopping postgres immediately", "reason", reason)
	a.poolerFence(ctx)
	err := a.d.Postgres.Stop(ctx, StopImmediate)
	a.fire("lost_lock", err == nil, reason)
	return err
}

// feedWatchdog keeps one invariant: whenever PostgreSQL may accept writes,
// the watchdog is armed to fence it at the lease deadline minus the safety
// margin (at once when there is no safe lease), so a freeze or crash of this
// agent right now cannot leave it writable once another node could be
// promoted. Paused clusters have no automatic failover, so no deadline.
func (a *Agent) feedWatchdog(pg PGState, paused bool) {
	if a.d.Watchdog == nil {
		return
	}
	var err error
	if pg.Writable() && !paused {
		left := a.leaseDeadline.Add(-a.s.SafetyMargin).Sub(a.d.Clock.Now())
		if a.leaseDeadline.IsZero() || left < 0 {
			left = 0
		}
		err = a.d.Watchdog.Arm(left)
	} else {
		err = a.d.Watchdog.Disarm()
	}
	if err != nil {
		a.log.Error("cannot feed watchdog", "error", err)
	}
}

// steerPooler keeps the local pooler's "primary" entries on the leader.
func (a *Agent) steerPooler(ctx context.Context, o Observation, d Decision) {
	if a.d.Pooler == nil {
		return
	}
	pending := switchoverDue(o)
	if pending && !a.poolerPaused && o.Cluster.Leader.Name != a.s.Name {
		// Hold this host's clients before the old leader shuts down; it
		// waits (bounded) until every member's pooler reports paused.
		if err := a.d.Pooler.Pause(ctx); err != nil {
			a.log.Warn("switchover: cannot pause pooler", "error", err)
		}
		a.poolerPaused, a.pausedAt = true, a.d.Clock.Now()
	}
	want := ""
	if l := o.Cluster.Leader; l != nil {
		if m := o.Cluster.Member(l.Name); m != nil && m.Role == "primary" && m.State == "running" {
			want = hostPort(m.ConnURL)
		}
		if l.Name == a.s.Name && (d.Action == ActHeartbeat || d.Action == ActAcquire) {
			want = a.s.ConnectAddress
		}
	}
	switch {
	case want == a.poolerLeader:
	case want == "" && (o.Cluster.Leader != nil || a.poolerPaused):
		// The new leader is not up yet (or the key is between holders
		// during a switchover, clients paused): keep the old target.
	default:
		if err := a.d.Pooler.SetLeader(ctx, want); err != nil {
			a.log.Warn("cannot repoint pooler", "leader", want, "error", err)
		} else {
			a.poolerLeader = want
		}
	}
	a.resumePooler(ctx, pending, want != "" && a.poolerLeader == want)
}

// busySteerPoll is how often the pooler is steered while the loop is busy
// with a long action.
const busySteerPoll = 100 * time.Millisecond

// steerWhile runs act, a long replica action (rewind, clone, start), while
// a helper keeps the local pooler on the leader: the old leader of a
// switchover rewinds for a second or more right after handing the key
// over, and its host's clients, paused for the handover, must be resumed
// on the new leader as soon as it accepts writes, not after the rewind.
// The loop goroutine is blocked in act meanwhile, so the helper is the
// only one touching the pooler state until it is joined.
func (a *Agent) steerWhile(ctx context.Context, d Decision, act func() error) error {
	if a.d.Pooler == nil {
		return act()
	}
	hctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if c, err := a.d.DCS.Cluster(hctx); err == nil && c.Leader != nil && c.Leader.Name != a.s.Name {
				// ctx, not hctx: a repoint under way is finished, not cut.
				a.steerPooler(ctx, Observation{Cluster: c, Now: a.d.Clock.Now()}, d)
			}
			select {
			case <-hctx.Done():
				return
			case <-time.After(busySteerPoll):
			}
		}
	}()
	err := act()
	stop()
	<-done
	return err
}

// resumePooler resumes paused clients once the switchover is over and the
// pooler points at a leader that accepts writes, or after a bound whatever
// happened (a paused database must never be left behind).
func (a *Agent) resumePooler(ctx context.Context, pending, ready bool) {
	if !a.poolerPaused {
		return
	}
	stuck := a.d.Clock.Now().Sub(a.pausedAt) > 2*completionBound
	if !stuck && (pending || !ready) {
		return
	}
	if stuck {
		a.log.Warn("pooler paused too long: resuming")
	}
	if err := a.d.Pooler.Resume(ctx); err != nil {
		a.log.Warn("cannot resume pooler", "error", err)
		return
	}
	a.poolerPaused = false
}

// switchoverDue: a switchover request is due now and still names the
// current leader.
func switchoverDue(o Observation) bool {
	c := o.Cluster
	if c == nil || c.Leader == nil || c.Failover == nil || c.Failover.Kind != "switchover" {
		return false
	}
	f := c.Failover
	if !f.ScheduledAt.IsZero() && o.Now.Before(f.ScheduledAt) {
		return false
	}
	return f.Leader == "" || f.Leader == c.Leader.Name
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
		var waiting []string
		for _, m := range c.Members {
			if m.Name != a.s.Name && m.Pooler && !m.PoolerPaused && m.State == "running" {
				waiting = append(waiting, m.Name)
			}
		}
		if len(waiting) == 0 {
			return
		}
		if a.d.Clock.Now().After(deadline) || ctx.Err() != nil {
			a.log.Warn("switchover: poolers not paused in time; going on", "members", fmt.Sprint(waiting))
			return
		}
		select {
		case <-ctx.Done():
		case <-a.d.Clock.After(20 * time.Millisecond):
		}
	}
}

// poolerFence stops the pooler sending writes to this node.
func (a *Agent) poolerFence(ctx context.Context) {
	if a.d.Pooler == nil || a.poolerLeader != a.s.ConnectAddress {
		return
	}
	if err := a.d.Pooler.SetLeader(ctx, ""); err != nil {
		a.log.Warn("cannot fence pooler", "error", err)
		return
	}
	a.poolerLeader = ""
}

// switchover hands leadership to target without losing a committed
// transaction: checkpoint, clean shutdown, wait until target has received
// everything up to the shutdown checkpoint, then release the key (the
// failover request naming target keeps the other replicas out of the race).
func (a *Agent) switchover(ctx context.Context, o Observation, target string) error {
	f := *o.Cluster.Failover
	if f.Candidate != target {
		f.Candidate = target
		if err := a.d.DCS.SetFailover(ctx, f, f.Revision); err != nil {
			return fmt.Errorf("switchover: record candidate: %w", err)
		}
	}
	// Checkpoint first, while clients still run, so the shutdown is quick.
	if err := a.d.Postgres.Checkpoint(ctx); err != nil {
		a.log.Warn("switchover: checkpoint failed", "error", err)
	}
	if a.d.Pooler != nil {
		if err := a.d.Pooler.Pause(ctx); err != nil {
			a.log.Warn("switchover: cannot pause pooler", "error", err)
		}
		a.poolerPaused, a.pausedAt = true, a.d.Clock.Now()
	}
	a.awaitPoolersPaused(ctx)
	a.log.Info("switchover: stopping postgres cleanly", "member", target)
	if a.d.Watchdog != nil {
		_ = a.d.Watchdog.Disarm()
	}
	if err := a.d.Postgres.Stop(ctx, StopFast); err != nil {
		return a.abortSwitchover(ctx, fmt.Errorf("stop postgres: %w", err))
	}
	lsn, err := a.d.Postgres.ShutdownCheckpoint(ctx)
	if err != nil {
		return a.abortSwitchover(ctx, fmt.Errorf("read shutdown checkpoint: %w", err))
	}
	m := o.Cluster.Member(target)
	deadline := a.d.Clock.Now().Add(a.switchoverWait())
	lastRenew := a.d.Clock.Now()
	for {
		// Keep the lease (and so the key) alive while waiting.
		if now := a.d.Clock.Now(); now.Sub(lastRenew) >= a.dynamic.LoopWait.D() {
			if ttl, err := a.d.DCS.Renew(ctx); err == nil {
				a.leaseDeadline = now.Add(ttl)
			}
			lastRenew = now
		}
		ps := a.d.Peers.Fetch(ctx, []dcs.Member{*m})
		if len(ps) == 1 && ps[0].Reachable && ps[0].WAL >= lsn {
			break
		}
		if a.d.Clock.Now().After(deadline) || ctx.Err() != nil {
			return a.abortSwitchover(ctx, fmt.Errorf("%s did not receive the shutdown checkpoint %d in time", target, lsn))
		}
		select {
		case <-ctx.Done():
		case <-a.d.Clock.After(20 * time.Millisecond):
		}
	}
	if err := a.d.DCS.ReleaseLeader(ctx); err != nil {
		return a.abortSwitchover(ctx, fmt.Errorf("release leader key: %w", err))
	}
	a.poolerFenceForced(ctx)
	a.log.Info("switchover: leader key released", "member", target, "lsn", lsn)
	a.fire("switchover", true, "to "+target)
	return nil
}

func (a *Agent) switchoverWait() time.Duration {
	if w := 2 * a.dynamic.RetryTimeout.D(); w > 0 {
		return w
	}
	return 6 * time.Second
}

// abortSwitchover restarts this node as primary (it still holds the key) so
// the cluster is left with a working primary, and drops the request.
func (a *Agent) abortSwitchover(ctx context.Context, cause error) error {
	var err error
	if uerr := a.d.DCS.UpdateLeader(ctx); uerr == nil {
		a.log.Error("switchover failed: staying primary", "error", cause)
		err = a.d.Postgres.Start(ctx, nil)
	} else {
		// The key is gone: starting as primary could make two writers.
		// The next loop follows whoever leads now.
		a.log.Error("switchover failed and the leader key is lost", "error", cause, "dcs_error", uerr)
	}
	if c, cerr := a.d.DCS.Cluster(ctx); cerr == nil && c.Failover != nil {
		_ = a.d.DCS.DeleteFailover(ctx, c.Failover.Revision)
	}
	if a.d.Pooler != nil && a.poolerPaused {
		_ = a.d.Pooler.Resume(ctx)
		a.poolerPaused = false
	}
	a.fire("switchover", false, cause.Error())
	return errors.Join(fmt.Errorf("switchover: %w", cause), err)
}

func (a *Agent) poolerFenceForced(ctx context.Context) {
	if a.d.Pooler == nil {
		return
	}
	a.poolerLeader = "-" // force a repoint on the next leader seen
}
