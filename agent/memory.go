package agent

import (
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// memory is what the loop carries from one observation to the next about
// the cluster and its own server: since when a condition has held, and
// whether its own primary was stopped by a fence. It is advanced only by
// remember, a pure function, and read by Decide through the Observation.
type memory struct {
	// crashedSince: this member holds the key and PostgreSQL is down.
	crashedSince time.Time
	// leaderlessSince: the DCS shows no leader key.
	leaderlessSince time.Time
	// stuckSince: a standby on an older timeline than its leader's, not
	// streaming (it may need a rewind).
	stuckSince time.Time
	// selfFenced: the loop (or the watchdog) fenced this member's primary
	// for its lease, and PostgreSQL has not run since.
	selfFenced bool
	// startWritable: at this agent's start its server may have accepted
	// writes (guardAtStart armed the watchdog); true until the first
	// observation.
	startWritable bool
	// couldWrite: at the last observation PostgreSQL may have accepted
	// writes as this member's primary.
	couldWrite bool
}

// remember advances m by one observation o (taken at o.Now), and returns
// the new memory; it changes nothing else.
func remember(m memory, o Observation) memory {
	c, pg, now := o.Cluster, o.PG, o.Now
	since := func(t time.Time, holds bool) time.Time {
		switch {
		case !holds:
			return time.Time{}
		case t.IsZero():
			return now
		}
		return t
	}
	m.crashedSince = since(m.crashedSince, c != nil && c.Leader != nil && c.Leader.Name == o.Node.Name && !pg.Running)
	if c != nil {
		// Without a DCS view nothing is known of the key: the count goes on.
		m.leaderlessSince = since(m.leaderlessSince, c.Leader == nil)
	}
	var lm *dcs.Member
	if c != nil && c.Leader != nil && c.Leader.Name != o.Node.Name {
		lm = c.Member(c.Leader.Name)
	}
	m.stuckSince = since(m.stuckSince, lm != nil && pg.Standby() && !pg.Streaming && pg.Timeline > 0 && pg.Timeline < lm.Timeline)

	// The server that could write last round is down now and the lease
	// cannot be counted on: a fence for the lease stopped it (the agent's,
	// or the watchdog's while the loop was blocked on etcd).
	if m.couldWrite && !pg.Running && !leaseSafe(o) {
		m.selfFenced = true
	}
	if m.startWritable && !pg.Running {
		// Stopped by the watchdog armed at this agent's start (its first
		// renewal came too late), not by an operator.
		m.selfFenced = true
	}
	m.startWritable = false
	if pg.Running || (c != nil && c.Leader != nil && c.Leader.Name != o.Node.Name) {
		m.selfFenced = false
	}
	m.couldWrite = pg.MayWrite() && (c == nil || o.leaderName() == o.Node.Name ||
		(o.leaderName() == "" && c.Status.Leader == o.Node.Name))
	return m
}

// annotate writes what the memory says into the observation Decide reads.
func (m memory) annotate(o *Observation) {
	o.CrashedSince, o.LeaderlessSince, o.StuckSince, o.SelfFenced = m.crashedSince, m.leaderlessSince, m.stuckSince, m.selfFenced
}
