package agent

import (
	"context"
	"slices"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// publish writes this member's record (when it changed, or once per
// loop_wait) and swaps in a new status snapshot for the REST API.
// It returns PostgreSQL's state after the action.
func (a *Agent) publish(ctx context.Context, o Observation, d Decision, start time.Time) PGState {
	pg := o.PG
	if d.Action != ActWait && d.Action != ActHeartbeat && d.Action != ActRefuse {
		// The action changed PostgreSQL: report what it is now.
		if st, err := a.d.Postgres.State(ctx); err == nil {
			pg = st
		}
	}
	isLeader := o.Cluster != nil && o.Cluster.Leader != nil && o.Cluster.Leader.Name == a.s.Name
	switch d.Action {
	case ActAcquire:
		isLeader = true
	case ActRelease, ActSwitchover, ActFence, ActDemote:
		isLeader = false
	}
	m := a.memberRecord(pg)
	now := a.d.Clock.Now()
	var leaderLSN uint64
	st := &Status{
		Name: a.s.Name, Scope: a.s.Scope, Role: m.Role, State: m.State,
		IsLeader: isLeader, Running: pg.Running, InRecovery: pg.InRecovery,
		Streaming: pg.Streaming, Upstream: pg.Upstream, Timeline: pg.Timeline,
		WALPosition: pg.WAL, ReceivedLSN: pg.WAL, ReplayedLSN: pg.Replayed,
		SyncMode: a.dynamic.SynchronousMode, Priority: a.s.Priority,
		NoFailover: a.s.NoFailover, NoLoadBalance: a.s.Tags["noloadbalance"] == "true",
		Tags: a.s.Tags, Pause: a.dynamic.Pause, ServerVersion: pg.ServerVersion,
		SystemID: pg.SystemID, ReplicationConns: pg.ReplicationConns,
		LastLoop: now, LoopDuration: now.Sub(start), TTL: a.dynamic.TTL.D(),
		LoopWait: a.dynamic.LoopWait.D(), LastDCSContact: a.lastDCS,
		Action: d.Action.String(), Reason: d.Reason,
		LeaseRenewals: a.renewals, LeaseFailures: a.renewFails, Failovers: a.failovers,
		DCSClusterView: o.Cluster,
	}
	if c := o.Cluster; c != nil {
		leaderLSN = c.Status.LSN
		st.ClusterUnlocked = c.Leader == nil
		if c.Leader != nil {
			st.Leader = c.Leader.Name
		}
		st.Synchronous = c.Sync != nil && slices.Contains(c.Sync.SyncStandby, a.s.Name)
	} else {
		prev := a.Status()
		leaderLSN, st.Leader = prev.LeaderLSN, prev.Leader
	}
	if isLeader {
		leaderLSN = pg.WAL
	}
	st.LeaderLSN = leaderLSN
	if a.d.Pooler != nil {
		st.Pooler = a.d.Pooler.State()
	}
	// The snapshot first: whoever sees the member record change (an
	// operator's switchover waiting for "primary") must then find the
	// health checks already saying so.
	a.status.Store(st)
	if o.Cluster != nil && (!sameMember(m, a.lastMember) || now.Sub(a.lastTouch) >= a.dynamic.LoopWait.D()) {
		a.touchMember(ctx, m, now)
	}
	return pg
}

func role(pg PGState) string {
	switch {
	case pg.DataEmpty:
		return "uninitialized"
	case pg.Running && !pg.InRecovery:
		return "primary"
	default:
		return "replica"
	}
}

// sameMember compares what matters for the other members' decisions; the
// WAL position alone changing is published at the loop_wait cadence.
func sameMember(a, b dcs.Member) bool {
	return a.Role == b.Role && a.State == b.State && a.Timeline == b.Timeline &&
		a.Streaming == b.Streaming && a.ConnURL == b.ConnURL && a.Priority == b.Priority &&
		a.PoolerPaused == b.PoolerPaused
}

// memberRecord is this member's key as PostgreSQL's state pg shows it.
func (a *Agent) memberRecord(pg PGState) dcs.Member {
	m := dcs.Member{
		Name:         a.s.Name,
		ConnURL:      "postgres://" + a.s.ConnectAddress + "/postgres",
		APIURL:       a.s.APIURL,
		Role:         role(pg),
		State:        stateName(pg),
		Timeline:     pg.Timeline,
		WALPosition:  pg.WAL,
		ReplayedLSN:  pg.Replayed,
		Streaming:    pg.Streaming,
		Priority:     a.s.Priority,
		Tags:         a.s.Tags,
		NoFailover:   a.s.NoFailover,
		Version:      a.s.Version,
		Pooler:       a.d.Pooler != nil,
		PoolerPaused: a.poolerPaused,
	}
	if pg.Running {
		m.State = "running"
	}
	return m
}

// touchMember writes the member key and remembers what and when, so that
// publish rewrites it only on a change or at the loop_wait cadence.
func (a *Agent) touchMember(ctx context.Context, m dcs.Member, now time.Time) {
	if err := a.d.DCS.TouchMember(ctx, m); err != nil {
		a.log.Warn("cannot publish member record", "error", err)
		return
	}
	a.lastTouch, a.lastMember = now, m
}
