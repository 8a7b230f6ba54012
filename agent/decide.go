package agent

import (
	"fmt"
	"slices"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// Decide is the HA decision: from one observation, the one thing to do now.
// It is a pure function: no I/O, no clock reads, no logging, and o is not
// modified. The executor performs the action and observes again.
//
// The order of the checks is the order of the guarantees: first never two
// writable primaries (fencing), then not losing data (who may be promoted),
// then availability.
func Decide(o Observation) Decision {
	d := decide(o)
	if o.RestartRequested && steady(o, d) {
		return Decision{Action: ActRestart, Reason: "restart requested"}
	}
	if o.ReinitRequested {
		return decideReinit(o, d)
	}
	return d
}

// decideReinit answers an operator's request to rebuild this replica from
// the leader, given d, what the node would do otherwise. Only a replica
// whose server cannot be writable is rebuilt, and only from a running
// primary; anything that makes the node safe comes first.
func decideReinit(o Observation, d Decision) Decision {
	refuse := func(why string) Decision { return Decision{Action: ActRefuseReinitialize, Reason: why} }
	switch d.Action {
	case ActFence, ActDemote, ActRelease, ActFollow, ActRewind:
		return d
	}
	switch leader := o.leaderName(); {
	case o.Cluster == nil:
		return d // the request waits for the DCS (and times out)
	case leader == o.Node.Name:
		return refuse(o.Node.Name + " is the leader: switch over first")
	case leader == "":
		return refuse("no leader to clone from")
	case o.PG.MayWrite():
		return d
	default:
		m := o.Cluster.Member(leader)
		if m == nil || m.Role != "primary" || m.State != "running" {
			return refuse("the leader " + leader + " does not run as a primary")
		}
		return Decision{Action: ActReinitialize, Target: leader, Reason: "reinitialize requested"}
	}
}

// steady: the node would do nothing but keep its role this round, so an
// operator's restart may run now.
func steady(o Observation, d Decision) bool {
	switch d.Action {
	case ActHeartbeat:
		return o.PG.Writable()
	case ActWait:
		return o.Cluster != nil && o.PG.Running && o.PG.Answering && (o.PG.InRecovery || o.Dynamic.Pause)
	}
	return false
}

func decide(o Observation) Decision {
	if !o.PG.Running && o.PG.Orphans {
		// Backends of a dead postmaster: nothing good can come of them,
		// and a busy one may still commit. Whatever the role.
		return Decision{Action: ActFence, Reason: "the postmaster is gone but processes of its data directory still run"}
	}
	if o.Cluster == nil {
		return decideWithoutDCS(o)
	}
	if o.Cluster.InitializeRevision == 0 {
		return decideUninitialized(o)
	}
	if o.Cluster.Initialize == "" && o.leaderName() == "" && !o.PG.MayWrite() {
		// A bootstrap claim with no cluster recorded yet: its holder is
		// creating the cluster, or died doing it (the claim then goes
		// with its lease). A node promoted now would be a second cluster.
		return Decision{Action: ActWait, Reason: "the cluster is being created (bootstrap claimed, no system identifier recorded yet)"}
	}
	if r := foreignData(o); r != "" {
		return Decision{Action: ActRefuse, Reason: r}
	}
	if o.Dynamic.Pause {
		return decidePaused(o)
	}
	switch leader := o.leaderName(); leader {
	case o.Node.Name:
		return decideLeader(o)
	case "":
		return decideRace(o)
	default:
		return decideFollower(o, leader)
	}
}

// leaseSafe says whether this node's lease is certain to be alive for at
// least the safety margin: the only condition under which it may keep
// accepting writes.
func leaseSafe(o Observation) bool {
	return !o.LeaseDeadline.IsZero() && o.Now.Before(o.LeaseDeadline.Add(-o.Node.SafetyMargin))
}

func leaseReason(o Observation) string {
	if o.LeaseDeadline.IsZero() {
		return "no lease"
	}
	left := o.LeaseDeadline.Sub(o.Now)
	return fmt.Sprintf("lease could expire in %s (safety margin %s)", left.Round(time.Millisecond), o.Node.SafetyMargin)
}

// decideWithoutDCS: a server that may accept writes and cannot count on
// its lease is fenced, paused or not: the operator's pause stops automatic
// failover, not the lease's expiry, and a manual failover may follow it.
func decideWithoutDCS(o Observation) Decision {
	if o.PG.MayWrite() && !leaseSafe(o) {
		return Decision{Action: ActFence, Reason: "dcs unreachable (" + o.DCSError + ") and " + leaseReason(o)}
	}
	if o.SelfFenced && !o.PG.MayWrite() && !o.Dynamic.Pause {
		// A link so slow that no answer comes back in time may still
		// carry each renewal to etcd, keeping the key of a fenced leader
		// alive: the delete may get there too. In pause no one else
		// would take the key; this leader takes it back instead.
		return Decision{Action: ActRelease, Reason: "dcs unreachable (" + o.DCSError + ") and this leader is fenced: handing the key back (best effort)"}
	}
	return Decision{Action: ActWait, Reason: "dcs unreachable: " + o.DCSError}
}

func decideUninitialized(o Observation) Decision {
	switch {
	case o.PG.DataEmpty && (o.Node.Priority <= 0 || o.Node.NoFailover):
		// A node that may never be primary must not become one by
		// winning the bootstrap race either.
		return Decision{Action: ActWait, Reason: "cluster not initialized; priority 0 or nofailover: waiting for another member to bootstrap"}
	case o.Unguarded != "" && (o.PG.DataEmpty || o.PG.Writable() || o.PG.WasPrimary):
		return Decision{Action: ActWait, Reason: "cluster not initialized; the watchdog cannot fence this node (" + o.Unguarded + "): not becoming primary"}
	case o.PG.DataEmpty:
		return Decision{Action: ActBootstrap, Reason: "cluster not initialized"}
	case o.PG.Writable() || o.PG.WasPrimary:
		// The DCS was wiped under a running cluster: the old primary
		// re-registers it. Replicas wait for it rather than racing with
		// data that may be behind.
		return Decision{Action: ActAdopt, Reason: "cluster not initialized in dcs; this data directory was a primary (system " + o.PG.SystemID + ")"}
	default:
		return Decision{Action: ActWait, Reason: "cluster not initialized in dcs; this data directory is a replica: waiting for a primary"}
	}
}

// foreignData refuses a data directory that belongs to another cluster.
func foreignData(o Observation) string {
	want := o.Cluster.Initialize
	if o.PG.DataEmpty || o.PG.SystemID == "" || want == "" || want == o.PG.SystemID {
		return ""
	}
	return fmt.Sprintf("data directory belongs to system %s but cluster %q is system %s: refusing to join (move the data directory away to re-clone)",
		o.PG.SystemID, o.Node.Name, want)
}

func decidePaused(o Observation) Decision {
	leader := o.leaderName()
	switch {
	case (leader == o.Node.Name || leader == "") && o.PG.MayWrite() && !leaseSafe(o):
		return Decision{Action: ActFence, Reason: "paused, but " + leaseReason(o)}
	case leader == o.Node.Name && o.PG.Writable():
		return Decision{Action: ActHeartbeat, Reason: "paused: holding leader key"}
	case leader == "" && o.PG.Writable():
		return Decision{Action: ActAcquire, Reason: "paused: running primary without leader key"}
	case leader == "" && manualCandidate(o) == o.Node.Name && o.PG.Standby():
		// The operator's choice, with the checks of any promotion.
		if why := promotionBlocked(o); why != "" {
			return Decision{Action: ActWait, Reason: "paused: manual failover to this node refused: " + why}
		}
		return Decision{Action: ActAcquire, Reason: "paused: manual failover to this node"}
	case leader == o.Node.Name && o.PG.Standby():
		// The key was taken for a promotion (a manual failover waiting
		// for its WAL replay, or one begun before the pause): finish it,
		// or no one can be primary.
		if o.Unguarded != "" {
			return Decision{Action: ActRelease, Reason: "paused: leader key held by this standby but the watchdog cannot fence this node (" + o.Unguarded + "): not promoting"}
		}
		if !leaseSafe(o) {
			return Decision{Action: ActWait, Reason: "paused: leader key held by this standby but " + leaseReason(o)}
		}
		return Decision{Action: ActAcquire, Reason: "paused: leader key held by this standby: finishing its promotion"}
	case o.SelfFenced && !o.PG.Running && o.PG.WasPrimary && leaseSafe(o) && o.Unguarded == "" &&
		(leader == o.Node.Name || (leader == "" && o.Cluster.Status.Leader == o.Node.Name && manualCandidate(o) == "")):
		// This agent fenced its own primary when the lease could expire
		// (etcd out of reach): the operator did not stop it, and nothing
		// was promoted since (a promotion names its node in the status
		// key first; none is automatic in pause). It takes its key back
		// and restarts, or the cluster stays without a primary until an
		// operator acts.
		if leader == "" {
			return Decision{Action: ActAcquire, Reason: "paused: the last leader, fenced by this agent when its lease could expire: taking the key back"}
		}
		return Decision{Action: ActStartPrimary, Reason: "paused: restarting the primary this agent fenced when its lease could expire"}
	}
	return Decision{Action: ActWait, Reason: "paused: no automatic failover"}
}

// manualCandidate is the candidate a failover request names, or "".
func manualCandidate(o Observation) string {
	if f := o.Cluster.Failover; f != nil {
		return f.Candidate
	}
	return ""
}

func decideLeader(o Observation) Decision {
	pg := o.PG
	if !leaseSafe(o) {
		if pg.MayWrite() {
			return Decision{Action: ActFence, Reason: "cannot keep leader lease: " + leaseReason(o)}
		}
		// Fenced (or never writable). Renewals that fail here may still
		// reach etcd (a slow link: each one arrives, its answer comes
		// back too late) and keep the key alive for ever while no one
		// can write: the key is handed back, best effort, so the others
		// can elect.
		return Decision{Action: ActRelease, Reason: "leader key held but " + leaseReason(o) + " and postgres cannot accept writes: handing the key back"}
	}
	switch {
	case pg.Writable():
		if o.Unguarded != "" && o.WatchdogRequired {
			return Decision{Action: ActDemote, Reason: "watchdog.mode is required and the watchdog cannot fence this node (" + o.Unguarded + "): stepping down"}
		}
		if d, ok := switchoverDecision(o); ok {
			return d
		}
		if o.Unguarded != "" {
			return Decision{Action: ActHeartbeat, Reason: "holding leader key, UNGUARDED: the watchdog cannot fence this node (" + o.Unguarded + ")"}
		}
		return Decision{Action: ActHeartbeat, Reason: "holding leader key"}
	case pg.Standby():
		if o.Unguarded != "" {
			return Decision{Action: ActRelease, Reason: "leader key held but the watchdog cannot fence this node (" + o.Unguarded + "): not promoting"}
		}
		return Decision{Action: ActAcquire, Reason: "leader key held but postgres is in recovery: promoting"}
	case pg.Mute():
		// It may be serving the sessions it has: it stays the leader
		// (and guarded) while the lease can be renewed, and is fenced like
		// any primary when it cannot.
		return Decision{Action: ActWait, Reason: "leader's postgres is " + pg.State + ": keeping the key while the lease renews"}
	}
	bound := o.Dynamic.TTL.D()
	if pg.DataEmpty {
		return Decision{Action: ActRelease, Reason: "leader key held but the data directory is empty: handing over"}
	}
	if !pg.WasPrimary {
		// The key was taken but the promotion never finished (the agent
		// died meanwhile). Started as a primary without promotion, a
		// standby's data would write on its old timeline beside the WAL
		// the last leader wrote there: start it as a standby, then promote
		// (a new timeline).
		return Decision{Action: ActStartReplica, Reason: "leader key held but this data directory is a standby's: starting it as one to promote it"}
	}
	if o.Unguarded != "" {
		return Decision{Action: ActRelease, Reason: "leader's postgres is " + stateName(pg) + " and the watchdog cannot fence this node (" + o.Unguarded + "): handing over"}
	}
	if o.CrashedSince.IsZero() || o.Now.Sub(o.CrashedSince) < bound {
		return Decision{Action: ActStartPrimary, Reason: "leader's postgres is " + stateName(pg) + ": restarting it in place"}
	}
	return Decision{Action: ActRelease, Reason: fmt.Sprintf("leader's postgres not running for %s (bound %s): handing over", o.Now.Sub(o.CrashedSince).Round(time.Millisecond), bound)}
}

// pointsElsewhere: this standby's WAL receiver is configured for another
// server than member m.
func pointsElsewhere(o Observation, m *dcs.Member) bool {
	return o.PG.Upstream != dcs.Addr(m.ConnURL)
}

// diverged: this replica has sat on an older timeline than the leader's,
// not streaming, for longer than stuckBound.
func diverged(o Observation) bool {
	return !o.StuckSince.IsZero() && o.Now.Sub(o.StuckSince) >= stuckBound(o)
}

// stuckBound is how long a replica may sit on an older timeline than the
// leader's without streaming before it is taken for diverged: long enough
// for a healthy one to reconnect and replay the timeline switch.
func stuckBound(o Observation) time.Duration {
	return max(30*time.Second, 3*o.Dynamic.TTL.D())
}

// maxStartFailures is how many failed starts as a replica lead to a re-clone.
const maxStartFailures = 3

func stateName(pg PGState) string {
	if pg.State == "" {
		return "not running"
	}
	return pg.State
}

// switchoverDecision handles a pending switchover request on the leader.
func switchoverDecision(o Observation) (Decision, bool) {
	f := o.Cluster.Failover
	if f == nil || f.Kind != "switchover" {
		return Decision{}, false
	}
	if f.Leader != "" && f.Leader != o.Node.Name {
		return Decision{Action: ActClearFailover, Reason: fmt.Sprintf("switchover names leader %s but %s holds the key", f.Leader, o.Node.Name)}, true
	}
	if !f.ScheduledAt.IsZero() && o.Now.Before(f.ScheduledAt) {
		return Decision{}, false
	}
	target, why := switchoverTarget(o.Cluster, o.Node.Name, f.Candidate, o.Dynamic.SynchronousMode)
	if target == "" {
		return Decision{Action: ActClearFailover, Reason: "switchover impossible: " + why}, true
	}
	return Decision{Action: ActSwitchover, Target: target, Reason: "switchover requested"}, true
}

// switchoverTarget checks a switchover away from leader to candidate (or,
// when candidate is "", picks the best eligible replica) against the member
// records, and returns the target or why there is none.
func switchoverTarget(c *dcs.Cluster, leader, candidate string, syncMode bool) (string, string) {
	var cands []contender
	for _, m := range c.Members {
		if m.Name == leader {
			continue
		}
		why := replicaIneligible(c, m, syncMode)
		if candidate != "" && m.Name == candidate {
			if why != "" {
				return "", fmt.Sprintf("candidate %s %s", candidate, why)
			}
			return candidate, ""
		}
		if why == "" {
			cands = append(cands, contender{Name: m.Name, WAL: m.WALPosition, Priority: m.Priority})
		}
	}
	if candidate != "" {
		return "", fmt.Sprintf("candidate %s is not a member", candidate)
	}
	best, ok := best(cands)
	if !ok {
		return "", "no healthy replica to hand over to"
	}
	return best.Name, ""
}

// replicaIneligible says why member m may not become leader by a switchover
// ("" when it may).
func replicaIneligible(c *dcs.Cluster, m dcs.Member, syncMode bool) string {
	switch {
	case m.Role != "replica" || m.State != "running":
		return fmt.Sprintf("is not a running replica (role %q, state %q)", m.Role, m.State)
	case !m.Streaming:
		return "is not streaming"
	case m.Priority <= 0 || m.RefusesFailover():
		return "has priority 0 or nofailover"
	case syncMode && !isSync(c, m.Name):
		return "is not a synchronous standby"
	}
	return ""
}

// isSync: name has every commit the last leader acknowledged in
// synchronous mode: it is a synchronous standby in the sync key, or it is
// the leader that wrote the key (its own commits are all its own). With no
// sync key at all no leader ever ran in synchronous mode (a leader writes
// the key before it takes the leader key, or on its first heartbeat in
// synchronous mode), so no member is known to lack a commit; without this
// a bootstrap cut short before it wrote the key left a cluster that could
// never elect a leader.
func isSync(c *dcs.Cluster, name string) bool {
	if c.Sync == nil {
		return true
	}
	return c.Sync.Leader == name || slices.Contains(c.Sync.SyncStandby, name)
}

func decideFollower(o Observation, leader string) Decision {
	pg := o.PG
	if pg.Writable() {
		return Decision{Action: ActDemote, Target: leader, Reason: leader + " holds the leader key: this node must not accept writes"}
	}
	if pg.MayWrite() {
		return Decision{Action: ActFence, Target: leader, Reason: leader + " holds the leader key and this node's postgres is " + pg.State + " as a primary: it may accept writes"}
	}
	lm := o.Cluster.Member(leader)
	if lm == nil || lm.ConnURL == "" {
		return Decision{Action: ActWait, Reason: "leader " + leader + " has not published its address yet"}
	}
	upstream := upstreamFor(o, leader)
	switch {
	case pg.DataEmpty:
		if lm.Role != "primary" || lm.State != "running" {
			return Decision{Action: ActWait, Reason: "leader " + leader + " not running yet: nothing to clone from"}
		}
		return Decision{Action: ActClone, Target: leader, Reason: "empty data directory"}
	case !pg.Running && o.StartFailures >= maxStartFailures:
		// Its data cannot be started as a standby of this leader (a
		// diverged or damaged directory): the leader has the data.
		return Decision{Action: ActClone, Target: leader, Reason: fmt.Sprintf("postgres failed to start as replica %d times: re-cloning from %s", o.StartFailures, leader)}
	case pg.Mute():
		// A standby still starting (perhaps never consistent without an
		// upstream) is repointed by a reload; otherwise let it start.
		if m := o.Cluster.Member(upstream); pg.State == "starting" && m != nil && pointsElsewhere(o, m) {
			return Decision{Action: ActFollow, Target: upstream, Reason: fmt.Sprintf("starting with upstream %q, leader is %s", pg.Upstream, leader)}
		}
		return Decision{Action: ActWait, Reason: "postgres is " + pg.State}
	case !pg.Running && pg.WasPrimary && (lm.Role != "primary" || lm.State != "running"):
		// pg_rewind against a leader still promoting reads its old
		// timeline: a needless rewind from far back, or none when one is
		// needed.
		return Decision{Action: ActWait, Reason: "former primary: waiting for " + leader + " to run as primary before rewinding"}
	case !pg.Running && pg.WasPrimary:
		return Decision{Action: ActRewind, Target: leader, Reason: "former primary rejoining " + leader}
	case !pg.Running:
		return Decision{Action: ActStartReplica, Target: upstream, Reason: "postgres " + stateName(pg) + ": starting as replica"}
	}
	if diverged(o) {
		return Decision{Action: ActRewind, Target: leader, Reason: fmt.Sprintf("not streaming on timeline %d behind leader's %d for %s: diverged, rewinding",
			pg.Timeline, lm.Timeline, o.Now.Sub(o.StuckSince).Round(time.Second))}
	}
	if m := o.Cluster.Member(upstream); m != nil && pointsElsewhere(o, m) {
		return Decision{Action: ActFollow, Target: upstream, Reason: fmt.Sprintf("replicating from %q, leader is %s", pg.Upstream, leader)}
	}
	return Decision{Action: ActWait, Reason: "replica of " + upstream}
}

// upstreamFor is whom this replica should stream from: the member its
// replicatefrom tag names when that one runs, else the leader.
func upstreamFor(o Observation, leader string) string {
	return sourceOf(o.Cluster, o.Node.Name, o.Node.ReplicateFrom, leader)
}

// decideRace: no one holds the leader key.
func decideRace(o Observation) Decision {
	pg := o.PG
	switch {
	case pg.MayWrite() && !leaseSafe(o):
		return Decision{Action: ActFence, Reason: "no leader key and " + leaseReason(o)}
	case pg.Mute() && pg.MayWrite():
		// It cannot take part in the race (its position is unknown) and
		// may accept writes while a replica is promoted.
		return Decision{Action: ActFence, Reason: "no leader key and postgres is " + pg.State + " as a primary: it may accept writes"}
	case pg.Writable() && o.Unguarded != "":
		return Decision{Action: ActDemote, Reason: "no leader key, and the watchdog cannot fence this node (" + o.Unguarded + "): not taking the key"}
	case pg.Writable():
		return Decision{Action: ActAcquire, Reason: "no leader; this node runs as primary"}
	}
	switch {
	case pg.DataEmpty:
		return Decision{Action: ActWait, Reason: "no leader to clone from"}
	case pg.Mute():
		return Decision{Action: ActWait, Reason: "no leader; postgres is " + pg.State}
	case !pg.Running:
		// A standby with no upstream can still report its WAL position
		// and compete.
		return Decision{Action: ActStartReplica, Reason: "no leader; starting postgres as replica to compete"}
	}
	if c := manualCandidate(o); c != "" && c != o.Node.Name && peerReachable(o, c) && !requestStale(o) {
		return Decision{Action: ActWait, Reason: "failover request names " + c}
	}
	if why := promotionBlocked(o); why != "" {
		return Decision{Action: ActWait, Reason: "no leader; not promotable: " + why}
	}
	if !leaseSafe(o) {
		// The key would be bound to a lease this node cannot count on (a
		// slow or failing link to etcd): taken now, it would be held
		// until that lease expires, with the promotion refused.
		return Decision{Action: ActWait, Reason: "no leader; not taking the key: " + leaseReason(o)}
	}
	return Decision{Action: ActAcquire, Reason: fmt.Sprintf("no leader; best candidate at WAL %d priority %d", pg.WAL, o.Node.Priority)}
}

// peer is name's answer this round (false: not asked).
func peer(o Observation, name string) (Peer, bool) {
	for _, p := range o.Peers {
		if p.Name == name {
			return p, true
		}
	}
	return Peer{}, false
}

// peerAnswered: name answered this round with its position (reachable,
// its server running).
func peerAnswered(o Observation, name string) bool {
	p, ok := peer(o, name)
	return ok && p.Reachable && p.Running
}

func peerReachable(o Observation, name string) bool {
	p, ok := peer(o, name)
	return ok && p.Reachable
}

// staleAfter is how long a failover request naming a candidate keeps the
// other members out of the race (beyond the ttl) when the candidate does not
// take over.
const staleAfter = 30 * time.Second

// requestStale says whether the pending failover request is too old to keep
// holding the race for its candidate.
func requestStale(o Observation) bool {
	f := o.Cluster.Failover
	since := f.RequestedAt
	if f.ScheduledAt.After(since) {
		since = f.ScheduledAt
	}
	return !since.IsZero() && o.Now.Sub(since) > o.Dynamic.TTL.D()+staleAfter
}

// promotionBlocked says why this running replica may not be promoted now
// ("" when it may): the checks every promotion passes, an operator's
// included. No member may still run as primary (the last leader's server
// asked directly, not only its agent), this node must be guardable, and
// it must be the best eligible candidate (ineligible).
func promotionBlocked(o Observation) string {
	if o.Now.Before(o.FailsafeHold) {
		return "this member confirmed a failsafe leader (or restarted while failsafe_mode is on) until " +
			o.FailsafeHold.UTC().Format("15:04:05.000") + ": that leader may still be primary"
	}
	if o.Dynamic.FailsafeMode && o.Cluster != nil && len(o.Cluster.Failsafe) > 0 && !slices.Contains(o.Cluster.Failsafe, o.Node.Name) {
		// The leader's rounds are confirmed by the members it published:
		// one it never asked could be promoted while it still runs.
		return "not among the members the leader published for failsafe_mode"
	}
	if o.LastLeaderRuns != "" {
		return "the last leader " + o.LastLeaderRuns + " still runs as a primary"
	}
	if o.Unguarded != "" {
		return "the watchdog cannot fence this node (" + o.Unguarded + ")"
	}
	return ineligible(o)
}

// ineligible says why this running replica must not take the leader key now
// ("" when it is the best candidate).
//
// An operator's failover naming this node skips the peer comparisons (the
// operator chose it; the lag check still applies unless forced) but never
// the priority-0 / nofailover rule, the timeline rule, nor the check that no
// reachable member runs as primary. The candidate of a switchover skips
// only the priority tie-break: its leader waited until it had received
// everything, so no peer can be ahead of it unless that leader died before
// handing over, and then WAL decides.
func ineligible(o Observation) string {
	c, pg, n := o.Cluster, o.PG, o.Node
	named := manualCandidate(o) == n.Name && !requestStale(o)
	// A switchover's candidate to whom the leader handed over has every
	// commit: no peer can be ahead. One whose leader died first has not.
	handed := named && c.Failover.HandedOver
	manual := named && c.Failover.Kind == "failover"
	force := manual && c.Failover.Force
	if n.Priority <= 0 || n.NoFailover {
		return "priority 0 or nofailover"
	}
	if lag := dcs.Behind(c.Status.LSN, pg.WAL); !force && lag > uint64(max(o.Dynamic.MaximumLagOnFailover, 0)) {
		return fmt.Sprintf("%d bytes behind the last leader position, more than maximum_lag_on_failover %d", lag, o.Dynamic.MaximumLagOnFailover)
	}
	if o.Dynamic.SynchronousMode && !isSync(c, n.Name) {
		return "synchronous mode and this node is not a synchronous standby"
	}
	// Even an operator's forced choice: promoting a diverged node would
	// throw away the newest timeline.
	newest, hist, known := newestTimeline(o)
	if ok, why := onNewestHistory(pg.Timeline, pg.WAL, newest, hist, known); !ok {
		return why
	}
	if l := o.LastLeaderStandby; l != "" && l != n.Name && !manual && !handed && !peerAnswered(o, l) &&
		o.Now.Sub(o.LeaderlessSince) < startingBound(o) {
		// The last leader is back as a standby but not among the members
		// that answered (its member key went with its lease): its position,
		// likely the furthest, is unknown, and replicas streaming from it
		// are catching up on it.
		return fmt.Sprintf("the last leader %s runs as a standby but has not told its position yet: waiting for it (at most %s without a leader)", l, startingBound(o))
	}
	me := contender{Name: n.Name, Timeline: pg.Timeline, WAL: pg.WAL, Priority: n.Priority}
	for _, p := range o.Peers {
		if p.Name == n.Name || !p.Reachable {
			continue
		}
		if p.Primary {
			return "member " + p.Name + " still runs as primary"
		}
		if manual || p.Priority <= 0 || p.NoFailover || p.Unguarded {
			continue
		}
		if !p.Running {
			// A member whose server runs but does not answer yet (crash
			// recovery, no free connection slot) holds the race for a while:
			// it may be ahead, it is about to be a candidate, and promoting
			// past it could lose what only it has.
			if m := c.Member(p.Name); p.Mute && m != nil && o.Now.Sub(o.LeaderlessSince) < startingBound(o) {
				// Its position now is unknown (the last one it published may
				// be old): it holds the race unless that one shows it diverged.
				if ok, _ := onNewestHistory(m.Timeline, m.WALPosition, newest, hist, known); ok || m.Timeline == 0 {
					return fmt.Sprintf("member %s runs but does not answer yet (its position is unknown; last published timeline %d WAL %d): waiting for it (at most %s without a leader)", p.Name, m.Timeline, m.WALPosition, startingBound(o))
				}
			}
			continue
		}
		if o.Dynamic.SynchronousMode && !isSync(c, p.Name) {
			continue
		}
		if ok, _ := onNewestHistory(p.Timeline, p.WAL, newest, hist, known); !ok {
			continue // diverged: not a candidate, and not ahead
		}
		if p.Stale && !handed && o.Now.Sub(o.LeaderlessSince) < startingBound(o) {
			// Its position was read while the last leader still wrote:
			// it may have received more since. Its next loop (woken by the
			// key's deletion) tells.
			return fmt.Sprintf("member %s has not answered since the leader key went: waiting for its position", p.Name)
		}
		pc := contender{Name: p.Name, Timeline: p.Timeline, WAL: p.WAL, Priority: p.Priority}
		if named && (pc.Timeline > me.Timeline || (pc.Timeline == me.Timeline && pc.WAL > me.WAL)) {
			return fmt.Sprintf("member %s is ahead (timeline %d WAL %d, this node timeline %d WAL %d) of this switchover candidate", p.Name, p.Timeline, p.WAL, me.Timeline, me.WAL)
		}
		if !named && better(pc, me) {
			return fmt.Sprintf("member %s is a better candidate (timeline %d, WAL %d, priority %d)", p.Name, p.Timeline, p.WAL, p.Priority)
		}
	}
	return ""
}

// startingBound is how long a starting member that was ahead holds the race.
func startingBound(o Observation) time.Duration {
	return max(60*time.Second, 3*o.Dynamic.TTL.D())
}
