package agent

import (
	"fmt"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/postgres/pgstate"
	"github.com/pgwarden/pgwarden/wal"
)

// PGState is what the local PostgreSQL looks like at one moment (the
// postgres package fills it in; pgstate links neither it nor its driver).
type PGState = pgstate.Server

// Peer is another member's state as its own REST API reported it during a
// leader race.
type Peer struct {
	Name      string
	Reachable bool
	// Running: the peer's PostgreSQL is up, so WAL is its real position.
	// A peer whose PostgreSQL is down (or whose data directory is still
	// empty) is not a candidate and does not hold back the race.
	Running bool
	// Primary: the peer says it runs as primary.
	Primary bool
	// Timeline and WAL: where the peer's WAL ends.
	Timeline uint32
	WAL      wal.LSN
	// Priority and NoFailover as the peer reports them.
	Priority   int
	NoFailover bool
	// Unguarded: its watchdog cannot fence it, so it will not take the
	// key; it does not hold the race back either.
	Unguarded bool
	// Mute: its PostgreSQL runs but does not answer its agent (startup,
	// crash recovery, no free connection slot): its position is the last
	// one it published.
	Mute bool
	// Stale: its answer is from a loop that still saw a leader key, so its
	// position may predate the last WAL it received from that leader.
	Stale bool
}

// PeerReport is what a peer's agent says of itself (its /patroni answer),
// as the REST client decoded it; Observe reads it into a Peer.
type PeerReport struct {
	Role, State     string
	Timeline        uint32
	Unguarded       bool
	ClusterUnlocked bool
	// The three WAL positions it reports (written, received, replayed).
	Location, Received, Replayed wal.LSN
}

// Observe records that the peer answered with r: how the election reads a
// peer's word.
func (p *Peer) Observe(r PeerReport) {
	p.Reachable = true
	p.Unguarded = r.Unguarded
	p.Mute = r.State == "starting" || r.State == "unresponsive"
	p.Stale = !r.ClusterUnlocked
	p.Running = r.State == "running"
	// A primary that runs but does not answer its agent (state
	// "unresponsive", "starting" or "stopping") may still accept writes:
	// it holds the race back like a running one.
	p.Primary = (r.Role == "primary" || r.Role == "master") && mayRun(r.State)
	if p.Running {
		p.Timeline = r.Timeline
		p.WAL = max(r.Location, r.Received, r.Replayed)
	}
}

// mayRun: in this state the peer's PostgreSQL may be running.
func mayRun(state string) bool {
	switch state {
	case "running", "unresponsive", "starting", "stopping":
		return true
	}
	return false
}

// Node is this member's static facts from its configuration file.
type Node struct {
	Name          string
	Priority      int
	NoFailover    bool
	ReplicateFrom string
	UsePgRewind   bool
	UseSlots      bool
	// SlotsTTL: how long a gone member's replication slot is kept.
	SlotsTTL time.Duration
	// SafetyMargin: the primary stops accepting writes this long before its
	// lease could expire.
	SafetyMargin time.Duration
}

// Observation is everything Decide looks at. It is built by the executor and
// never modified by Decide.
type Observation struct {
	Node Node
	// Cluster is the DCS view; nil when the DCS could not be read.
	Cluster *dcs.Cluster
	// DCSError is why Cluster is nil.
	DCSError string
	// Dynamic is the cluster's dynamic configuration (from the DCS, or the
	// last known one when the DCS is unreachable).
	Dynamic config.Dynamic
	PG      PGState
	// LeaseDeadline is when this member's lease could expire at the
	// earliest: the send time of the last successful renewal plus the TTL.
	// Zero when there is no lease.
	LeaseDeadline time.Time
	// FailsafeHold: this member confirmed a leader's failsafe round and
	// must not take the key before then.
	FailsafeHold time.Time
	// Peers are the other members' answers, fetched only when the leader
	// key is absent.
	Peers []Peer
	// CrashedSince is when the local PostgreSQL was first seen not running
	// while this node held the leader key (zero: not crashed).
	CrashedSince time.Time
	// StartFailures counts consecutive failed attempts to start (or
	// rewind and start) PostgreSQL as a replica.
	StartFailures int
	// LeaderlessSince is when this node first saw no leader key (zero
	// while there is one).
	LeaderlessSince time.Time
	// StuckSince is when this running replica was first seen not streaming
	// while on an older timeline than the leader's (zero: it is not). A
	// replica that stays so has diverged and cannot follow without rewind.
	StuckSince time.Time
	// Unguarded says why the watchdog cannot fence this node now ("" when
	// it can, or when none is configured): such a node must not become a
	// primary.
	Unguarded string
	// WatchdogRequired: watchdog.mode is "required"; a leader left
	// unguarded hands over rather than running on.
	WatchdogRequired bool
	// LastLeaderRuns names the last leader (and where) when, with no
	// leader key, its PostgreSQL still answers as a primary (or answers at
	// all, without saying its role): no one may be promoted then.
	LastLeaderRuns string
	// SelfFenced: this agent fenced its own PostgreSQL as a primary because
	// its lease could expire, and it has not run since (false after an
	// agent restart, or once another member holds the key).
	SelfFenced bool
	// LastLeaderStandby names the last leader when, with no leader key,
	// its PostgreSQL answers as a standby: it may be ahead of every
	// member (it was the primary), and replicas still streaming from it
	// catch up on what it has.
	LastLeaderStandby string
	// RestartRequested: an operator asked for a restart of PostgreSQL.
	RestartRequested bool
	// ReinitRequested: an operator asked to rebuild this replica from the
	// leader.
	ReinitRequested bool
	// Now is the time of the observation.
	Now time.Time
}

// leaderName is the holder of the leader key, or "".
func (o *Observation) leaderName() string {
	if o.Cluster == nil || o.Cluster.Leader == nil {
		return ""
	}
	return o.Cluster.Leader.Name
}

// Action is one thing the executor does.
type Action int

// The actions, each a step of the state machine of one node.
const (
	// ActWait does nothing this round.
	ActWait Action = iota
	// ActBootstrap races for the initialize key and, when won, creates the
	// cluster: initdb, start as primary, take the leader key.
	ActBootstrap
	// ActAdopt takes the initialize key for an existing data directory (the
	// DCS was wiped) and starts as primary.
	ActAdopt
	// ActClone copies the data directory from the target with pg_basebackup.
	ActClone
	// ActStartReplica starts PostgreSQL as a standby of the target (or of
	// nobody when the target is empty).
	ActStartReplica
	// ActFollow repoints a running standby at the target.
	ActFollow
	// ActRewind runs pg_rewind from the target, then starts as its standby.
	ActRewind
	// ActHeartbeat renews the leadership of a healthy primary.
	ActHeartbeat
	// ActAcquire takes the leader key and promotes (if in recovery).
	ActAcquire
	// ActStartPrimary restarts a crashed primary in place while holding the key.
	ActStartPrimary
	// ActRelease gives up the leader key (PostgreSQL would not come back).
	ActRelease
	// ActDemote stops this node accepting writes: it holds no valid
	// leadership but runs as primary.
	ActDemote
	// ActFence stops PostgreSQL at once: the lease may expire before a
	// clean demotion could finish.
	ActFence
	// ActSwitchover hands leadership to the target: clean shutdown, wait for
	// the target to receive the shutdown checkpoint, release the key.
	ActSwitchover
	// ActClearFailover deletes a failover request that cannot be honoured.
	ActClearFailover
	// ActRefuse does nothing and says why: acting would be unsafe.
	ActRefuse
	// ActRestart restarts PostgreSQL in its current role (an operator's
	// request).
	ActRestart
	// ActRefuseRestart answers an operator's restart request that cannot be
	// honoured now, with the reason.
	ActRefuseRestart
	// ActReinitialize rebuilds this replica from Target, the leader: stop,
	// wipe, clone (an operator's request).
	ActReinitialize
	// ActRefuseReinitialize answers an operator's reinitialize request that
	// cannot be honoured, with the reason.
	ActRefuseReinitialize
)

var actionNames = [...]string{
	ActWait: "wait", ActBootstrap: "bootstrap", ActAdopt: "adopt", ActClone: "clone",
	ActStartReplica: "start_replica", ActFollow: "follow", ActRewind: "rewind",
	ActHeartbeat: "heartbeat", ActAcquire: "acquire", ActStartPrimary: "start_primary",
	ActRelease: "release", ActDemote: "demote", ActFence: "fence",
	ActSwitchover: "switchover", ActClearFailover: "clear_failover", ActRefuse: "refuse",
	ActRestart: "restart", ActRefuseRestart: "refuse_restart",
	ActReinitialize: "reinitialize", ActRefuseReinitialize: "refuse_reinitialize",
}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Decision is Decide's answer: one action, its target member (if any) and a
// reason an operator can read in the log.
type Decision struct {
	Action Action
	// Target is the member to clone from, follow, rewind from or hand over to.
	Target string
	Reason string
}

func (d Decision) String() string {
	if d.Target != "" {
		return fmt.Sprintf("%s %s: %s", d.Action, d.Target, d.Reason)
	}
	return fmt.Sprintf("%s: %s", d.Action, d.Reason)
}
