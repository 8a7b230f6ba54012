package agent

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

// publish writes this member's record (when it changed, or once per
// loop_wait) and swaps in a new status snapshot for the REST API; it
// returns the record it wrote. Its facts come from the outcome of the
// action, never from the action attempted: a lost leader race publishes no
// leadership.
func (a *Agent) publish(ctx context.Context, o Observation, d Decision, out Outcome, start time.Time) memberWrite {
	pg := out.PG
	if last := a.st.member.m; pg.Mute() && last.Name != "" {
		// A server that runs but does not answer keeps its WAL: publish
		// where it was last seen, not nothing (a race weighs it by this).
		pg.Timeline, pg.History = last.Timeline, last.History
		pg.WAL, pg.Replayed = last.WALPosition, last.ReplayedLSN
	}
	m := a.memberRecord(pg)
	if c := o.Cluster; c != nil && c.Leader == nil && !out.KeyHeld && d.Action == ActWait {
		// An operator reading `list` during a failover that does not
		// happen sees why.
		m.Waiting = d.Reason
	}
	now := a.d.Clock.Now()
	renewals, failures := a.leaseCounters()
	_, unguarded := a.leaseView()
	var leaderLSN wal.LSN
	st := &Status{
		Name: a.s.Name, Scope: a.s.Scope, Role: m.Role, State: m.State,
		IsLeader: out.KeyHeld, Running: pg.Running, Answering: pg.Answering, InRecovery: pg.InRecovery,
		Streaming: pg.Streaming, Upstream: pg.Upstream, Timeline: pg.Timeline,
		WALPosition: pg.WAL, ReceivedLSN: pg.WAL, ReplayedLSN: pg.Replayed,
		SyncMode: a.st.dynamic.SynchronousMode, FailsafeMode: a.st.dynamic.FailsafeMode, Priority: a.s.Priority,
		NoFailover: a.s.NoFailover, NoLoadBalance: a.s.Tags["noloadbalance"] == "true",
		Tags: a.s.Tags, Pause: a.st.dynamic.Pause, ServerVersion: pg.ServerVersion,
		SystemID: pg.SystemID, ReplicationConns: pg.ReplicationConns, WALSenders: pg.WALSenders, PendingRestart: pg.PendingRestart,
		PostmasterPID: pg.PostmasterPID, PostmasterStart: pg.PostmasterStart,
		LastLoop: now, LoopDuration: now.Sub(start), TTL: a.st.dynamic.TTL.D(),
		LoopWait: a.st.dynamic.LoopWait.D(), LastDCSContact: a.st.lastDCS,
		Action: d.Action.String(), Reason: d.Reason,
		LeaseRenewals: renewals, LeaseFailures: failures, Failovers: a.st.failovers,
		DCSClusterView: o.Cluster, Unguarded: unguarded,
	}
	if f := a.st.fail; f.Failures > 0 {
		st.Failing = f.name()
		st.LastError, st.Failures, st.FailingSince = f.Err, f.Failures, f.Since
	}
	if c := o.Cluster; c != nil {
		leaderLSN = c.Status.LSN
		st.ClusterUnlocked = c.Leader == nil && !out.KeyHeld
		if c.Leader != nil {
			st.Leader = c.Leader.Name
		}
		if out.KeyHeld {
			st.Leader = a.s.Name
		} else if st.Leader == a.s.Name {
			st.Leader = ""
		}
		st.Synchronous = c.Sync != nil && slices.Contains(c.Sync.SyncStandby, a.s.Name)
	} else {
		prev := a.Status()
		leaderLSN, st.Leader = prev.LeaderLSN, prev.Leader
	}
	if out.KeyHeld && pg.Answering {
		leaderLSN = pg.WAL
	}
	st.LeaderLSN = leaderLSN
	if a.d.Pooler != nil {
		st.Pooler = a.d.Pooler.State()
	}
	// The snapshot first: whoever sees the member record change (an
	// operator's switchover waiting for "primary") must then find the
	// health checks already saying so.
	a.storeStatus(st)
	if o.Cluster != nil && a.memberStale(o.Cluster, m, now) {
		return a.touchMember(ctx, m, now)
	}
	return memberWrite{}
}

// memberStale says whether this member's record must be written: etcd (as
// last read) does not have it as it is now, or only its WAL positions
// moved and loop_wait has passed since the last write. An idle member
// writes nothing: its record lives with its lease.
func (a *Agent) memberStale(c *dcs.Cluster, m dcs.Member, now time.Time) bool {
	rec := c.Member(a.s.Name)
	if rec == nil || !sameMember(*rec, m) || rec.APIURL != m.APIURL || rec.NoFailover != m.NoFailover ||
		rec.Version != m.Version || rec.Pooler != m.Pooler || !maps.Equal(rec.Tags, m.Tags) ||
		!slices.Equal(rec.History, m.History) || !sameMember(a.st.member.m, m) {
		return true
	}
	moved := rec.WALPosition != m.WALPosition || rec.ReplayedLSN != m.ReplayedLSN
	return moved && now.Sub(a.st.member.at) >= a.st.dynamic.LoopWait.D()
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
		a.PoolerPaused == b.PoolerPaused && a.Waiting == b.Waiting && a.Error == b.Error &&
		a.PendingRestart == b.PendingRestart
}

// memberRecord is this member's key as PostgreSQL's state pg shows it.
func (a *Agent) memberRecord(pg PGState) dcs.Member {
	m := dcs.Member{
		Name:         a.s.Name,
		ConnURL:      dcs.ConnURL(a.s.ConnectAddress),
		APIURL:       a.s.APIURL,
		Role:         role(pg),
		State:        stateName(pg),
		Timeline:     pg.Timeline,
		History:      pg.History,
		WALPosition:  pg.WAL,
		ReplayedLSN:  pg.Replayed,
		Streaming:    pg.Streaming,
		Priority:     a.s.Priority,
		Tags:         a.s.Tags,
		NoFailover:   a.s.NoFailover,
		Version:      a.s.Version,
		Pooler:       a.d.Pooler != nil,
		PoolerPaused: a.steer.isPaused(),
		// Shown by `list`; no agent decides by it.
		PendingRestart: pg.PendingRestart,
	}
	if f := a.st.fail; f.Failures > 0 {
		m.Error = f.summary()
	}
	return m
}

// touchMember writes the member key and returns what it wrote and when
// (zero when it could not), so that publish rewrites it only on a change
// or at the loop_wait cadence.
func (a *Agent) touchMember(ctx context.Context, m dcs.Member, now time.Time) memberWrite {
	if err := a.d.DCS.TouchMember(ctx, m); err != nil {
		a.log.Warn("cannot publish member record", "error", err)
		return memberWrite{}
	}
	return memberWrite{at: now, m: m}
}
