package agent

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/quick"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// obs builds an observation of node "me" (priority 100, safe lease) in an
// initialized cluster; edit applies the case's changes.
func obs(edit func(o *Observation)) Observation {
	o := Observation{
		Node:          Node{Name: "me", Priority: 100, SafetyMargin: 2 * time.Second},
		Dynamic:       config.DefaultDynamic(),
		LeaseDeadline: t0.Add(10 * time.Second),
		Now:           t0,
		Cluster: &dcs.Cluster{
			Initialize: "42", InitializeRevision: 1,
			Members: []dcs.Member{
				{Name: "me", ConnURL: "postgres://127.0.0.1:5432/postgres", Role: "replica", State: "running", Streaming: true, Priority: 100},
				{Name: "other", ConnURL: "postgres://127.0.0.1:5433/postgres", Role: "replica", State: "running", Streaming: true, Priority: 100},
			},
		},
		PG: PGState{Running: true, Answering: true, State: "running", InRecovery: true, Streaming: true, SystemID: "42", WAL: 1000, Upstream: "127.0.0.1:5433"},
	}
	if edit != nil {
		edit(&o)
	}
	return o
}

func leader(name string) func(o *Observation) {
	return func(o *Observation) { o.Cluster.Leader = &dcs.Leader{Name: name, Revision: 5} }
}

func primary(o *Observation) { o.PG.InRecovery, o.PG.Streaming, o.PG.Upstream = false, false, "" }

// mute: PostgreSQL runs but did not answer the status query.
func mute(o *Observation) { o.PG.Answering, o.PG.State = false, "unresponsive" }

func all(fs ...func(o *Observation)) func(o *Observation) {
	return func(o *Observation) {
		for _, f := range fs {
			f(o)
		}
	}
}

func TestDecide(t *testing.T) {
	cases := []struct {
		name   string
		o      Observation
		want   Action
		target string
		reason string // substring of the reason
	}{
		{"no dcs, primary with safe lease keeps running", obs(all(primary, func(o *Observation) { o.Cluster, o.DCSError = nil, "down" })), ActWait, "", "dcs unreachable"},
		{"no dcs, primary with lease about to expire fences", obs(all(primary, func(o *Observation) {
			o.Cluster, o.DCSError = nil, "down"
			o.Now = o.LeaseDeadline.Add(-time.Second)
		})), ActFence, "", "lease could expire"},
		{"no dcs, paused primary with a safe lease is left alone", obs(all(primary, func(o *Observation) {
			o.Cluster, o.DCSError, o.Dynamic.Pause = nil, "down", true
		})), ActWait, "", "dcs unreachable"},
		// Pause stops automatic failover, not the lease: a paused leader cut
		// off from etcd fences like any other (a resume, or a manual
		// failover, may promote another node meanwhile).
		{"no dcs, paused primary past its lease fences", obs(all(primary, func(o *Observation) {
			o.Cluster, o.DCSError, o.Dynamic.Pause = nil, "down", true
			o.Now = o.LeaseDeadline.Add(time.Second)
		})), ActFence, "", "lease could expire"},
		{"paused leader past its lease fences", obs(all(primary, leader("me"), func(o *Observation) {
			o.Dynamic.Pause = true
			o.Now = o.LeaseDeadline.Add(-time.Second)
		})), ActFence, "", "paused, but lease"},
		{"no dcs, replica waits", obs(func(o *Observation) { o.Cluster, o.DCSError = nil, "down" }), ActWait, "", "dcs unreachable"},
		// A leader fenced for its lease whose etcd answers too late (each
		// renewal still arriving) hands the key back blind (before: waited,
		// the key alive, no primary for as long as the link stayed slow).
		{"no dcs, a leader this agent fenced hands the key back", obs(func(o *Observation) {
			o.Cluster, o.DCSError, o.SelfFenced = nil, "timeout", true
			o.PG = PGState{State: "stopped", SystemID: "42", WasPrimary: true}
		}), ActRelease, "", "handing the key back"},
		{"no dcs, paused: a leader this agent fenced keeps the key to take it back", obs(func(o *Observation) {
			o.Cluster, o.DCSError, o.SelfFenced, o.Dynamic.Pause = nil, "timeout", true, true
			o.PG = PGState{State: "stopped", SystemID: "42", WasPrimary: true}
		}), ActWait, "", "dcs unreachable"},
		{"no dcs, a stopped former primary not fenced by this agent waits", obs(func(o *Observation) {
			o.Cluster, o.DCSError = nil, "timeout"
			o.PG = PGState{State: "stopped", SystemID: "42", WasPrimary: true}
		}), ActWait, "", "dcs unreachable"},
		{"uninitialized, empty: bootstrap", obs(func(o *Observation) {
			o.Cluster = &dcs.Cluster{}
			o.PG = PGState{DataEmpty: true}
		}), ActBootstrap, "", "not initialized"},
		{"uninitialized, empty, priority 0: waits", obs(func(o *Observation) {
			o.Cluster = &dcs.Cluster{}
			o.PG = PGState{DataEmpty: true}
			o.Node.Priority = 0
		}), ActWait, "", "priority 0"},
		{"uninitialized, old primary data: adopt", obs(func(o *Observation) {
			o.Cluster = &dcs.Cluster{}
			o.PG = PGState{WasPrimary: true, SystemID: "42"}
		}), ActAdopt, "", "was a primary"},
		{"uninitialized, replica data: wait", obs(func(o *Observation) { o.Cluster = &dcs.Cluster{} }), ActWait, "", "replica"},
		{"a bootstrap claim with no system recorded yet: no race", obs(func(o *Observation) { o.Cluster.Initialize = "" }), ActWait, "", "being created"},
		{"foreign system id refused", obs(func(o *Observation) { o.PG.SystemID = "7" }), ActRefuse, "", "belongs to system 7"},
		{"leader healthy: heartbeat", obs(all(primary, leader("me"))), ActHeartbeat, "", "holding leader key"},
		{"leader with unsafe lease fences", obs(all(primary, leader("me"), func(o *Observation) { o.Now = o.LeaseDeadline.Add(-time.Second) })), ActFence, "", "cannot keep leader lease"},
		{"leader without lease fences", obs(all(primary, leader("me"), func(o *Observation) { o.LeaseDeadline = time.Time{} })), ActFence, "", "no lease"},
		{"leader in recovery promotes", obs(leader("me")), ActAcquire, "", "promoting"},
		// A busy backend outlives a killed postmaster and may commit: its
		// processes are killed at once, whatever the node's role.
		{"orphaned backends of a dead postmaster are fenced", obs(all(leader("me"), func(o *Observation) {
			o.PG = PGState{State: "crashed", Orphans: true, WasPrimary: true}
		})), ActFence, "", "postmaster is gone"},
		{"orphaned backends are fenced without dcs too", obs(func(o *Observation) {
			o.Cluster, o.DCSError = nil, "down"
			o.PG = PGState{State: "crashed", Orphans: true, WasPrimary: true}
		}), ActFence, "", "postmaster is gone"},
		// A running primary that does not answer the agent is a running
		// primary: it keeps the key while the lease renews, and is fenced
		// when the lease could expire (before: a failed status query read as
		// "starting", not running, and the lease loss yielded Wait).
		{"mute leader keeps the key while the lease renews", obs(all(primary, leader("me"), mute)), ActWait, "", "keeping the key"},
		{"mute leader whose lease could expire is fenced", obs(all(primary, leader("me"), mute, func(o *Observation) { o.Now = o.LeaseDeadline.Add(-time.Second) })), ActFence, "", "cannot keep leader lease"},
		{"mute primary without dcs past its lease is fenced", obs(all(primary, mute, func(o *Observation) {
			o.Cluster, o.DCSError = nil, "down"
			o.Now = o.LeaseDeadline.Add(-time.Second)
		})), ActFence, "", "dcs unreachable"},
		{"mute primary without the key is fenced", obs(all(primary, mute)), ActFence, "", "may accept writes"},
		{"mute primary under another leader is fenced", obs(all(primary, mute, leader("other"))), ActFence, "other", "may accept writes"},
		{"starting standby under a leader waits", obs(all(leader("other"), mute, func(o *Observation) { o.PG.State = "starting" })), ActWait, "", "starting"},
		// A node the watchdog cannot fence never becomes primary.
		{"unguarded replica is not promoted", obs(func(o *Observation) { o.Unguarded = "watchdog unavailable" }), ActWait, "", "watchdog cannot fence"},
		{"unguarded leader standby hands over", obs(all(leader("me"), func(o *Observation) { o.Unguarded = "watchdog unavailable" })), ActRelease, "", "not promoting"},
		{"unguarded leader in required mode steps down", obs(all(primary, leader("me"), func(o *Observation) {
			o.Unguarded, o.WatchdogRequired = "watchdog unavailable", true
		})), ActDemote, "", "required"},
		{"unguarded leader in process mode says so", obs(all(primary, leader("me"), func(o *Observation) { o.Unguarded = "watchdog unavailable" })), ActHeartbeat, "", "UNGUARDED"},
		{"unguarded crashed leader is not restarted as primary", obs(all(leader("me"), func(o *Observation) {
			o.PG = PGState{State: "crashed", SystemID: "42", WasPrimary: true}
			o.Unguarded = "watchdog unavailable"
		})), ActRelease, "", "handing over"},
		{"unguarded node does not bootstrap", obs(func(o *Observation) {
			o.Cluster = &dcs.Cluster{}
			o.PG = PGState{DataEmpty: true}
			o.Unguarded = "watchdog unavailable"
		}), ActWait, "", "watchdog cannot fence"},
		// An operator's restart runs only when the node is steady.
		{"restart of a steady leader", obs(all(primary, leader("me"), func(o *Observation) { o.RestartRequested = true })), ActRestart, "", "restart requested"},
		{"restart of a streaming replica", obs(all(leader("other"), func(o *Observation) { o.RestartRequested = true })), ActRestart, "", "restart requested"},
		{"restart waits while the leader promotes", obs(all(leader("me"), func(o *Observation) { o.RestartRequested = true })), ActAcquire, "", "promoting"},
		{"restart waits while the lease is unsafe", obs(all(primary, leader("me"), func(o *Observation) {
			o.RestartRequested = true
			o.Now = o.LeaseDeadline.Add(-time.Second)
		})), ActFence, "", "cannot keep leader lease"},
		{"leader whose standby data never got promoted starts it as a standby", obs(all(leader("me"), func(o *Observation) {
			o.PG = PGState{State: "crashed", SystemID: "42"}
			o.CrashedSince = t0.Add(-time.Second)
		})), ActStartReplica, "", "to promote it"},
		{"leader with an empty data directory hands over", obs(all(leader("me"), func(o *Observation) { o.PG = PGState{DataEmpty: true} })), ActRelease, "", "empty"},
		{"leader's postgres crashed: restart in place", obs(all(leader("me"), func(o *Observation) {
			o.PG = PGState{State: "crashed", SystemID: "42", WasPrimary: true}
			o.CrashedSince = t0.Add(-time.Second)
		})), ActStartPrimary, "", "restarting it in place"},
		{"leader's postgres down past the bound: release", obs(all(leader("me"), func(o *Observation) {
			o.PG = PGState{State: "crashed", SystemID: "42", WasPrimary: true}
			o.CrashedSince = t0.Add(-time.Minute)
		})), ActRelease, "", "handing over"},
		{"other leader while writable: demote", obs(all(primary, leader("other"))), ActDemote, "other", "must not accept writes"},
		{"follower of the leader waits", obs(leader("other")), ActWait, "", "replica of other"},
		{"diverged replica, stuck on an old timeline past the bound, rewinds", obs(all(leader("other"), func(o *Observation) {
			o.PG.Streaming, o.PG.Timeline, o.Cluster.Members[1].Timeline = false, 1, 2
			o.StuckSince = o.Now.Add(-stuckBound(*o))
		})), ActRewind, "other", "diverged"},
		{"replica briefly behind the leader's timeline waits", obs(all(leader("other"), func(o *Observation) {
			o.PG.Streaming, o.PG.Timeline, o.Cluster.Members[1].Timeline = false, 1, 2
			o.StuckSince = o.Now.Add(-stuckBound(*o) + time.Second)
		})), ActWait, "", "replica of other"},
		{"follower pointed elsewhere follows", obs(all(leader("other"), func(o *Observation) { o.PG.Upstream = "127.0.0.1:9999" })), ActFollow, "other", "leader is other"},
		{"empty data dir clones from running leader", obs(all(leader("other"), func(o *Observation) {
			o.PG = PGState{DataEmpty: true}
			o.Cluster.Members[1].Role = "primary"
		})), ActClone, "other", "empty data directory"},
		{"empty data dir waits for a leader that is not running", obs(all(leader("other"), func(o *Observation) {
			o.PG = PGState{DataEmpty: true}
			o.Cluster.Members[1].State = "starting"
		})), ActWait, "", "nothing to clone"},
		{"stopped former primary rewinds", obs(all(leader("other"), func(o *Observation) {
			o.PG = PGState{State: "stopped", WasPrimary: true, SystemID: "42"}
			o.Cluster.Members[1].Role = "primary"
		})), ActRewind, "other", "former primary"},
		{"stopped former primary waits for the new leader's promotion", obs(all(leader("other"), func(o *Observation) {
			o.PG = PGState{State: "stopped", WasPrimary: true, SystemID: "42"}
		})), ActWait, "", "before rewinding"},
		{"replica that keeps failing to start is re-cloned", obs(all(leader("other"), func(o *Observation) {
			o.PG = PGState{State: "crashed", SystemID: "42", WasPrimary: true}
			o.StartFailures = 3
		})), ActClone, "other", "re-cloning"},
		{"stopped replica starts", obs(all(leader("other"), func(o *Observation) { o.PG = PGState{State: "stopped", SystemID: "42"} })), ActStartReplica, "other", "starting as replica"},
		{"race: best replica acquires", obs(func(o *Observation) {
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, WAL: 900, Priority: 100}}
		}), ActAcquire, "", "best candidate"},
		{"race: peer ahead wins", obs(func(o *Observation) {
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, WAL: 1001, Priority: 1}}
		}), ActWait, "", "better candidate"},
		{"race: equal WAL, higher priority wins", obs(func(o *Observation) {
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, WAL: 1000, Priority: 200}}
		}), ActWait, "", "better candidate"},
		{"race: equal WAL and priority, smaller name wins", obs(func(o *Observation) {
			o.Peers = []Peer{{Name: "aaa", Reachable: true, Running: true, WAL: 1000, Priority: 100}}
		}), ActWait, "", "better candidate"},
		{"race: unreachable peer ahead is ignored", obs(func(o *Observation) {
			o.Peers = []Peer{{Name: "other", WAL: 5000, Priority: 100}}
		}), ActAcquire, "", "best candidate"},
		{"race: priority-0 peer ahead does not block", obs(func(o *Observation) {
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, WAL: 5000, Priority: 0}}
		}), ActAcquire, "", "best candidate"},
		{"race: peer still primary blocks", obs(func(o *Observation) {
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, Primary: true, WAL: 10}}
		}), ActWait, "", "still runs as primary"},
		{"race: priority 0 never promoted", obs(func(o *Observation) { o.Node.Priority = 0 }), ActWait, "", "priority 0"},
		{"race: nofailover never promoted", obs(func(o *Observation) { o.Node.NoFailover = true }), ActWait, "", "nofailover"},
		// Not by an operator's failover naming it either, forced or not, nor
		// as the candidate of a switchover whose leader died.
		{"race: forced manual failover to a priority-0 node is refused", obs(func(o *Observation) {
			o.Node.Priority = 0
			o.Cluster.Failover = &dcs.Failover{Kind: "failover", Candidate: "me", Force: true, RequestedAt: t0}
		}), ActWait, "", "priority 0"},
		{"race: switchover candidate with nofailover is not promoted after its leader died", obs(func(o *Observation) {
			o.Node.NoFailover = true
			o.Cluster.Failover = &dcs.Failover{Kind: "switchover", Candidate: "me", RequestedAt: t0}
		}), ActWait, "", "nofailover"},
		{"race: too far behind the last leader position", obs(func(o *Observation) { o.Cluster.Status.LSN = 1000 + 2<<20 }), ActWait, "", "maximum_lag_on_failover"},
		{"race: synchronous mode, not sync standby", obs(func(o *Observation) {
			o.Dynamic.SynchronousMode = true
			o.Cluster.Sync = &dcs.Sync{Leader: "old", SyncStandby: []string{"other"}}
		}), ActWait, "", "synchronous"},
		// No sync key at all: no leader ever ran in synchronous mode (a
		// bootstrap cut short before writing it), so no one lacks a commit.
		{"race: synchronous mode, no sync key ever written", obs(func(o *Observation) { o.Dynamic.SynchronousMode = true }), ActAcquire, "", "best candidate"},
		// Timelines (the candidate order is (timeline, position) among the
		// members on the newest timeline's history).
		{"race: diverged former primary at a higher LSN on an old timeline is not promoted", obs(func(o *Observation) {
			o.PG.Timeline, o.PG.WAL = 1, 5000
			o.Cluster.History = []dcs.HistoryEntry{{Timeline: 2, LSN: 3000}}
		}), ActWait, "", "diverged"},
		{"race: replica on an ancestor timeline, not past its end, is eligible", obs(func(o *Observation) {
			o.PG.Timeline, o.PG.WAL = 1, 2000
			o.Cluster.History = []dcs.HistoryEntry{{Timeline: 2, LSN: 3000}}
		}), ActAcquire, "", "best candidate"},
		{"race: a diverged peer at a higher LSN does not hold the race", obs(func(o *Observation) {
			o.PG.Timeline, o.PG.WAL = 2, 3500
			o.PG.History = []dcs.Fork{{Timeline: 1, LSN: 3000}}
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, Timeline: 1, WAL: 5000, Priority: 100}}
		}), ActAcquire, "", "best candidate"},
		{"race: a peer on the newer timeline wins over a higher LSN", obs(func(o *Observation) {
			o.PG.Timeline, o.PG.WAL = 1, 2900
			o.Cluster.History = []dcs.HistoryEntry{{Timeline: 2, LSN: 3000}}
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, Timeline: 2, WAL: 1000, Priority: 100}}
		}), ActWait, "", "better candidate"},
		{"race: the newest timeline's history from a member record (the DCS history lags)", obs(func(o *Observation) {
			o.PG.Timeline, o.PG.WAL = 1, 5000
			o.Cluster.Members[1].Timeline, o.Cluster.Members[1].History = 2, []dcs.Fork{{Timeline: 1, LSN: 3000}}
		}), ActWait, "", "diverged"},
		{"race: ... but for one whose leader died before handing over", obs(func(o *Observation) {
			o.LeaderlessSince = t0.Add(-time.Second)
			o.Cluster.Failover = &dcs.Failover{Kind: "switchover", Candidate: "me", RequestedAt: t0}
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, Stale: true, WAL: 10, Priority: 100}}
		}), ActWait, "", "has not answered since the leader key went"},
		{"race: a peer whose answer predates the leader's loss holds the race", obs(func(o *Observation) {
			o.LeaderlessSince = t0.Add(-time.Second)
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, Stale: true, WAL: 10, Priority: 100}}
		}), ActWait, "", "has not answered since the leader key went"},
		{"race: ... not for a switchover's candidate handed over to", obs(func(o *Observation) {
			o.LeaderlessSince = t0.Add(-time.Second)
			o.Cluster.Failover = &dcs.Failover{Kind: "switchover", Candidate: "me", RequestedAt: t0, HandedOver: true}
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, Stale: true, WAL: 10, Priority: 100}}
		}), ActAcquire, "", "best candidate"},
		{"race: a starting member that was ahead holds the race", obs(func(o *Observation) {
			o.LeaderlessSince = t0.Add(-5 * time.Second)
			o.Cluster.Members[1].WALPosition = 5000
			o.Peers = []Peer{{Name: "other", Reachable: true, Mute: true, Priority: 100}}
		}), ActWait, "", "does not answer yet"},
		{"race: ... but not for ever", obs(func(o *Observation) {
			o.LeaderlessSince = t0.Add(-10 * time.Minute)
			o.Cluster.Members[1].WALPosition = 5000
			o.Peers = []Peer{{Name: "other", Reachable: true, Mute: true, Priority: 100}}
		}), ActAcquire, "", "best candidate"},
		{"race: a starting member whose last position was behind holds it too (its position now is unknown)", obs(func(o *Observation) {
			o.LeaderlessSince = t0.Add(-5 * time.Second)
			o.Cluster.Members[1].WALPosition = 10
			o.Peers = []Peer{{Name: "other", Reachable: true, Mute: true, Priority: 100}}
		}), ActWait, "", "does not answer yet"},
		{"race: a starting member known diverged does not", obs(func(o *Observation) {
			o.LeaderlessSince = t0.Add(-5 * time.Second)
			o.PG.Timeline, o.PG.History = 2, []dcs.Fork{{Timeline: 1, LSN: 800}}
			o.Cluster.Members[1].Timeline, o.Cluster.Members[1].WALPosition = 1, 900
			o.Peers = []Peer{{Name: "other", Reachable: true, Mute: true, Priority: 100}}
		}), ActAcquire, "", "best candidate"},
		{"race: a newer timeline whose history no one knows", obs(func(o *Observation) {
			o.PG.Timeline, o.PG.WAL = 2, 5000
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: false, Timeline: 3, WAL: 10, Priority: 100}}
		}), ActWait, "", "not known"},
		{"race: forced failover to a diverged node is refused", obs(func(o *Observation) {
			o.PG.Timeline, o.PG.WAL = 1, 5000
			o.Cluster.History = []dcs.HistoryEntry{{Timeline: 2, LSN: 3000}}
			o.Cluster.Failover = &dcs.Failover{Kind: "failover", Candidate: "me", Force: true, RequestedAt: t0}
		}), ActWait, "", "diverged"},
		{"race: synchronous mode, sync standby acquires", obs(func(o *Observation) {
			o.Dynamic.SynchronousMode = true
			o.Cluster.Sync = &dcs.Sync{Leader: "old", SyncStandby: []string{"me"}}
		}), ActAcquire, "", "best candidate"},
		{"race: writable without key and safe lease takes it", obs(primary), ActAcquire, "", "runs as primary"},
		{"race: writable without key, unsafe lease fences", obs(all(primary, func(o *Observation) { o.LeaseDeadline = time.Time{} })), ActFence, "", "no leader key"},
		{"race: stopped replica starts to compete", obs(func(o *Observation) { o.PG = PGState{State: "stopped", SystemID: "42"} }), ActStartReplica, "", "compete"},
		{"race: manual failover to another reachable member: wait", obs(func(o *Observation) {
			o.Cluster.Failover = &dcs.Failover{Kind: "failover", Candidate: "other", RequestedAt: t0}
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, WAL: 10, Priority: 100}}
		}), ActWait, "", "names other"},
		{"race: manual forced failover to a lagging me", obs(func(o *Observation) {
			o.Cluster.Failover = &dcs.Failover{Kind: "failover", Candidate: "me", Force: true, RequestedAt: t0}
			o.Cluster.Status.LSN = 1 << 30
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, WAL: 1 << 29, Priority: 100}}
		}), ActAcquire, "", "best candidate"},
		{"paused: leader heartbeats", obs(all(primary, leader("me"), func(o *Observation) { o.Dynamic.Pause = true })), ActHeartbeat, "", "paused"},
		{"paused: no automatic failover", obs(func(o *Observation) { o.Dynamic.Pause = true }), ActWait, "", "paused"},
		// A manual failover while paused passes the checks of any
		// promotion (before: it went straight to acquire).
		{"paused: manual failover refused while the last leader still runs as primary", obs(func(o *Observation) {
			o.Dynamic.Pause = true
			o.Cluster.Failover = &dcs.Failover{Kind: "failover", Candidate: "me", RequestedAt: t0}
			o.LastLeaderRuns = "other at 127.0.0.1:5433"
		}), ActWait, "", "still runs as a primary"},
		{"paused: manual failover refused while a peer says it is primary", obs(func(o *Observation) {
			o.Dynamic.Pause = true
			o.Cluster.Failover = &dcs.Failover{Kind: "failover", Candidate: "me", RequestedAt: t0}
			o.Peers = []Peer{{Name: "other", Reachable: true, Running: true, Primary: true}}
		}), ActWait, "", "still runs as primary"},
		{"paused: manual failover refused in synchronous mode to a non-synchronous member", obs(func(o *Observation) {
			o.Dynamic.Pause, o.Dynamic.SynchronousMode = true, true
			o.Cluster.Sync = &dcs.Sync{Leader: "old", SyncStandby: []string{"other"}}
			o.Cluster.Failover = &dcs.Failover{Kind: "failover", Candidate: "me", RequestedAt: t0}
		}), ActWait, "", "synchronous"},
		{"paused: manual failover to a fit member", obs(func(o *Observation) {
			o.Dynamic.Pause = true
			o.Cluster.Failover = &dcs.Failover{Kind: "failover", Candidate: "me", RequestedAt: t0}
		}), ActAcquire, "", "manual failover"},
		// Resumed after the paused leader's agent died: its PostgreSQL still
		// answers as a primary, directly asked: no one is promoted.
		// The last leader back as a standby, its member key gone with its
		// lease: it may be ahead, and replicas streaming from it catch up
		// (sim seed 7144: a replica was promoted past what the last leader
		// and a replica fed by it had).
		{"race: the last leader runs as a standby and has not answered: wait", obs(func(o *Observation) {
			o.LastLeaderStandby, o.LeaderlessSince = "old", t0.Add(-time.Second)
		}), ActWait, "", "has not told its position"},
		{"race: the last leader standby that answered is compared like any peer", obs(func(o *Observation) {
			o.LastLeaderStandby, o.LeaderlessSince = "old", t0.Add(-time.Second)
			o.Peers = []Peer{{Name: "old", Reachable: true, Running: true, WAL: 500, Priority: 100}}
		}), ActAcquire, "", "best candidate"},
		// A candidate whose own lease is not safe does not take the key
		// (campaign: a slow-link node won the race, could not record its
		// timeline, and held the key until its lease expired).
		{"race: a best candidate with an unsafe lease does not take the key", obs(func(o *Observation) {
			o.Now = o.LeaseDeadline.Add(-time.Second)
		}), ActWait, "", "not taking the key"},
		// Failsafe: a member that confirmed a leader's round takes no key
		// until its hold ends, etcd back or not.
		{"race: a member that confirmed a failsafe leader holds off", obs(func(o *Observation) {
			o.FailsafeHold = o.Now.Add(time.Second)
		}), ActWait, "", "failsafe leader"},
		{"race: with failsafe_mode, a member the leader did not publish is never promoted", obs(func(o *Observation) {
			o.Dynamic.FailsafeMode = true
			o.Cluster.Failsafe = []string{"old", "other"}
		}), ActWait, "", "not among the members the leader published"},
		{"race: with failsafe_mode, a published member races as usual", obs(func(o *Observation) {
			o.Dynamic.FailsafeMode = true
			o.Cluster.Failsafe = []string{"me", "old", "other"}
		}), ActAcquire, "", "best candidate"},
		{"race: after the failsafe hold the race goes on", obs(func(o *Observation) {
			o.FailsafeHold = o.Now.Add(-time.Millisecond)
		}), ActAcquire, "", "best candidate"},
		{"race: the wait for a silent last leader is bounded", obs(func(o *Observation) {
			o.LastLeaderStandby, o.LeaderlessSince = "old", t0.Add(-time.Hour)
		}), ActAcquire, "", "best candidate"},
		{"race: the last leader's server still answers as primary", obs(func(o *Observation) {
			o.LastLeaderRuns = "other at 127.0.0.1:5433"
		}), ActWait, "", "still runs as a primary"},
		{"paused: crashed leader not restarted", obs(all(leader("me"), func(o *Observation) {
			o.Dynamic.Pause = true
			o.PG = PGState{State: "crashed", SystemID: "42"}
		})), ActWait, "", "paused"},
		// A paused manual failover to a lagging candidate took the key and
		// waited for replay; the next loops must finish it (before: "no
		// automatic failover", the key held by a standby, no primary).
		{"paused: a standby holding the key finishes its promotion", obs(all(leader("me"), func(o *Observation) {
			o.Dynamic.Pause = true
			o.Cluster.Failover = &dcs.Failover{Kind: "failover", Candidate: "me", RequestedAt: t0}
		})), ActAcquire, "", "finishing its promotion"},
		{"paused: a standby holding the key without a watchdog hands it back", obs(all(leader("me"), func(o *Observation) {
			o.Dynamic.Pause, o.Unguarded = true, "watchdog gone"
		})), ActRelease, "", "not promoting"},
		{"paused: a standby holding the key with an unsafe lease waits", obs(all(leader("me"), func(o *Observation) {
			o.Dynamic.Pause = true
			o.Now = o.LeaseDeadline.Add(-time.Second)
		})), ActWait, "", "lease could expire"},
		// A paused leader that fenced itself while etcd was out of reach
		// takes its key back and restarts (before: no primary until an
		// operator acted). Only that one: not a server the operator
		// stopped, not when another node was named since.
		{"paused: the last leader fenced by its agent takes the key back", obs(func(o *Observation) {
			o.Dynamic.Pause, o.SelfFenced = true, true
			o.Cluster.Status.Leader = "me"
			o.PG = PGState{State: "stopped", SystemID: "42", WasPrimary: true}
		}), ActAcquire, "", "taking the key back"},
		{"paused: the last leader fenced by its agent restarts once it holds the key", obs(all(leader("me"), func(o *Observation) {
			o.Dynamic.Pause, o.SelfFenced = true, true
			o.PG = PGState{State: "stopped", SystemID: "42", WasPrimary: true}
		})), ActStartPrimary, "", "restarting the primary this agent fenced"},
		{"paused: a leader the operator stopped is not restarted", obs(func(o *Observation) {
			o.Dynamic.Pause = true
			o.Cluster.Status.Leader = "me"
			o.PG = PGState{State: "stopped", SystemID: "42", WasPrimary: true}
		}), ActWait, "", "no automatic failover"},
		{"paused: a fenced former leader does not take the key after another was named", obs(func(o *Observation) {
			o.Dynamic.Pause, o.SelfFenced = true, true
			o.Cluster.Status.Leader = "other"
			o.PG = PGState{State: "stopped", SystemID: "42", WasPrimary: true}
		}), ActWait, "", "no automatic failover"},
		{"paused: a fenced former leader does not take the key while a failover is asked for", obs(func(o *Observation) {
			o.Dynamic.Pause, o.SelfFenced = true, true
			o.Cluster.Status.Leader = "me"
			o.Cluster.Failover = &dcs.Failover{Kind: "failover", Candidate: "other", RequestedAt: t0}
			o.PG = PGState{State: "stopped", SystemID: "42", WasPrimary: true}
		}), ActWait, "", "no automatic failover"},
		{"paused: a fenced former leader waits for a safe lease", obs(func(o *Observation) {
			o.Dynamic.Pause, o.SelfFenced = true, true
			o.Cluster.Status.Leader = "me"
			o.PG = PGState{State: "stopped", SystemID: "42", WasPrimary: true}
			o.LeaseDeadline = time.Time{}
		}), ActWait, "", "no automatic failover"},
		// A leader that cannot count on its lease and is fenced hands the
		// key back: renewals that arrive late still keep the lease alive
		// (a slow link), and with it a key no one can use (before: wait,
		// no primary for as long as the link stayed slow).
		{"leader past its lease with postgres fenced hands the key back", obs(all(leader("me"), func(o *Observation) {
			o.PG = PGState{State: "stopped", SystemID: "42", WasPrimary: true}
			o.Now = o.LeaseDeadline.Add(-time.Second)
		})), ActRelease, "", "handing the key back"},
		{"switchover to a named candidate", obs(all(primary, leader("me"), func(o *Observation) {
			o.Cluster.Failover = &dcs.Failover{Kind: "switchover", Leader: "me", Candidate: "other"}
		})), ActSwitchover, "other", "switchover requested"},
		{"switchover naming another leader is cleared", obs(all(primary, leader("me"), func(o *Observation) {
			o.Cluster.Failover = &dcs.Failover{Kind: "switchover", Leader: "x", Candidate: "other"}
		})), ActClearFailover, "", "names leader x"},
		{"switchover to a non-streaming candidate is cleared", obs(all(primary, leader("me"), func(o *Observation) {
			o.Cluster.Failover = &dcs.Failover{Kind: "switchover", Candidate: "other"}
			o.Cluster.Members[1].Streaming = false
		})), ActClearFailover, "", "not streaming"},
		{"scheduled switchover waits for its time", obs(all(primary, leader("me"), func(o *Observation) {
			o.Cluster.Failover = &dcs.Failover{Kind: "switchover", Candidate: "other", ScheduledAt: t0.Add(time.Hour)}
		})), ActHeartbeat, "", "holding leader key"},
		{"scheduled switchover happens at its time", obs(all(primary, leader("me"), func(o *Observation) {
			o.Cluster.Failover = &dcs.Failover{Kind: "switchover", Candidate: "other", ScheduledAt: t0.Add(-time.Second)}
		})), ActSwitchover, "other", "switchover requested"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := deepText(t, c.o)
			got := Decide(c.o)
			if got.Action != c.want || got.Target != c.target || !strings.Contains(got.Reason, c.reason) {
				t.Fatalf("Decide = %s (target %q, reason %q); want %s target %q reason containing %q",
					got.Action, got.Target, got.Reason, c.want, c.target, c.reason)
			}
			if after := deepText(t, c.o); after != before {
				t.Fatalf("Decide modified its observation:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// naiveBest is the reference for better/best: sort by the documented keys.
func naiveBest(cs []contender) contender {
	s := slices.Clone(cs)
	slices.SortStableFunc(s, func(a, b contender) int {
		switch {
		case a.Timeline != b.Timeline:
			if a.Timeline > b.Timeline {
				return -1
			}
			return 1
		case a.WAL != b.WAL:
			if a.WAL > b.WAL {
				return -1
			}
			return 1
		case a.Priority != b.Priority:
			return b.Priority - a.Priority
		default:
			return strings.Compare(a.Name, b.Name)
		}
	})
	return s[0]
}

func TestBestMatchesNaiveReference(t *testing.T) {
	f := func(seed uint64, n uint8) bool {
		r := rand.New(rand.NewPCG(seed, 1))
		cs := make([]contender, int(n%8)+1)
		for i := range cs {
			// Small ranges so ties on WAL and priority are common.
			cs[i] = contender{Name: string(rune('a' + i)), Timeline: uint32(1 + r.IntN(2)), WAL: wal.LSN(r.IntN(3)), Priority: r.IntN(3) * 50}
		}
		r.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
		got, ok := best(cs)
		return ok && got == naiveBest(cs)
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 5000}); err != nil {
		t.Fatal(err)
	}
	if _, ok := best(nil); ok {
		t.Fatal("best(nil) reported a candidate")
	}
}

func TestBetterIsATotalOrder(t *testing.T) {
	f := func(a, b contender) bool {
		if a == b {
			return !better(a, b)
		}
		if a.Name == b.Name {
			return true // names are unique in a cluster
		}
		return better(a, b) != better(b, a)
	}
	if err := quick.Check(f, nil); err != nil {
		t.Fatal(err)
	}
}

// deepText renders o with everything its pointers reach (the cluster view
// included), so a change anywhere in it shows.
func deepText(t *testing.T, o Observation) string {
	t.Helper()
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDeepTextSeesClusterChanges: the check above can fail (a by-value
// copy of the observation shares its cluster and could not).
func TestDeepTextSeesClusterChanges(t *testing.T) {
	o := obs(leader("other"))
	before := deepText(t, o)
	o.Cluster.Members[1].Priority = 7
	if deepText(t, o) == before {
		t.Fatal("a change in the cluster view went unseen")
	}
}

func TestDecideReinit(t *testing.T) {
	req := func(o *Observation) { o.ReinitRequested = true }
	otherPrimary := func(o *Observation) { o.Cluster.Members[1].Role = "primary" }
	for _, c := range []struct {
		name   string
		o      Observation
		want   Action
		target string
		reason string
	}{
		{"a streaming replica is rebuilt from the leader", obs(all(req, leader("other"), otherPrimary)), ActReinitialize, "other", "reinitialize requested"},
		{"the leader refuses", obs(all(req, primary, leader("me"))), ActRefuseReinitialize, "", "is the leader"},
		{"no leader: refused", obs(req), ActRefuseReinitialize, "", "no leader"},
		{"a leader that does not run as primary: refused", obs(all(req, leader("other"))), ActRefuseReinitialize, "", "does not run as a primary"},
		{"a writable non-leader is first made a standby", obs(all(req, primary, leader("other"), otherPrimary)), ActDemote, "other", "must not accept writes"},
		{"without the dcs the request waits", obs(all(req, func(o *Observation) { o.Cluster, o.DCSError = nil, "down" })), ActWait, "", "dcs unreachable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Decide(c.o)
			if got.Action != c.want || got.Target != c.target || !strings.Contains(got.Reason, c.reason) {
				t.Fatalf("Decide = %s (target %q, reason %q); want %s target %q reason containing %q",
					got.Action, got.Target, got.Reason, c.want, c.target, c.reason)
			}
		})
	}
}
