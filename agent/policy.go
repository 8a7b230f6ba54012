package agent

import (
	"errors"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

// The executor's small decisions, pure, beside Decide: what an action does
// when a step of it answers one way or another.

// leaderKeyLost says whether err, from renewing the leader key, means the
// key is gone (another member holds it, or the lease it was bound to
// expired): a server this member made writable must stop at once, not at
// the next loop. Any other error (etcd slow, unreachable) leaves the key
// to the lease and the watchdog.
func leaderKeyLost(err error) bool {
	return errors.Is(err, dcs.ErrNotLeader) || errors.Is(err, dcs.ErrLeaseExpired)
}

// replayWaitStep says whether a promotion waits for WAL replay this loop:
// while the replayed position is behind the received one and moved since
// the last loop (lastSeen, 0 when not waiting). Waiting in the loop, with
// the lease renewed, rather than inside the promotion: a long replay there
// would outlast the lease. A replay that stopped moving does not hold the
// promotion back. It returns the position to remember (0: not waiting).
func replayWaitStep(pg PGState, lastSeen wal.LSN) (wait bool, seen wal.LSN) {
	if pg.Replayed < pg.WAL && pg.Replayed != lastSeen {
		return true, pg.Replayed
	}
	return false, 0
}

// reclonesAfterRewind says whether a failed pg_rewind (err) is a reason to
// wipe and re-clone: only when the data directory cannot be rewound. A
// source that did not answer says nothing of this data: it is kept, and
// the rewind tried again later.
func reclonesAfterRewind(err error) bool { return errors.Is(err, ErrCannotRewind) }

// poolerPlan is what the local pooler is told this round.
type poolerPlan struct {
	// Pending: a switchover is due; Pause: hold this host's clients
	// before the old leader shuts down (it waits, bounded, until every
	// member's pooler reports paused).
	Pending, Pause bool
	// Target is the address the "primary" databases should point at
	// ("" when no writable leader is known); Repoint: tell the pooler.
	Target  string
	Repoint bool
}

// planPooler steers the local pooler from the observation and the step's
// outcome: to the leader once its record says it runs as primary (or to
// this node the moment it took the key and accepts writes), never to
// nothing while a leader exists or clients are paused for a handover
// (the key between holders: the old target is kept). current is where it
// points, paused whether its clients are held.
func planPooler(o Observation, out Outcome, self, selfAddr, current string, paused bool) poolerPlan {
	p := poolerPlan{Pending: switchoverDue(o)}
	p.Pause = p.Pending && !paused && o.Cluster.Leader.Name != self
	if l := o.Cluster.Leader; l != nil {
		if m := o.Cluster.Member(l.Name); m != nil && m.Role == "primary" && m.State == "running" {
			p.Target = dcs.Addr(m.ConnURL)
		}
		if l.Name == self && out.KeyHeld && out.PG.Writable() {
			p.Target = selfAddr
		}
	} else if out.KeyHeld && out.PG.Writable() {
		p.Target = selfAddr // the key was just taken
	}
	hold := p.Target == "" && (o.Cluster.Leader != nil || paused)
	p.Repoint = p.Target != current && !hold
	return p
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

// unpausedPoolers are the members a switchover still waits for before the
// old leader shuts down: running members (other than self) whose pooler
// has not reported its primary databases paused. A member that is down,
// or runs no pooler, sends no client anywhere and is not waited for.
func unpausedPoolers(c *dcs.Cluster, self string) []string {
	var waiting []string
	for _, m := range c.Members {
		if m.Name != self && m.Pooler && !m.PoolerPaused && m.State == "running" {
			waiting = append(waiting, m.Name)
		}
	}
	return waiting
}

// handedOver says whether the switchover candidate, as its own API reports
// it (ps: the one answer asked for), has received the old leader's WAL up
// to the shutdown checkpoint's end (lsn): only then may the key be
// released without losing a commit. An unreachable candidate has not.
func handedOver(ps []Peer, lsn wal.LSN) bool {
	return len(ps) == 1 && ps[0].Reachable && ps[0].WAL >= lsn
}
