package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
)

// Scripted scenarios on the simulated cluster: each drives one defect the
// random schedules found (or could find), with the invariant checks of the
// simulation running after every step of every process. Seeds do not
// survive changes to the random stream; these do.

// healthy starts a world and runs it until it has a leader and every other
// member streams from it.
func healthy(t *testing.T, o simOpts) *world {
	t.Helper()
	return healthySeed(t, 1, o)
}

func healthySeed(t *testing.T, seed int64, o simOpts) *world {
	t.Helper()
	if o.nodes == 0 {
		o.nodes = 3
	}
	if o.ttl == 0 {
		o.ttl = 10 * time.Second
	}
	w := newWorld(t, seed, o)
	off := false
	w.tick(&off)
	t.Cleanup(w.s.shutdown)
	if !w.until(60*time.Second, func() bool { return w.settled() }) {
		w.fatal(t, "cluster did not settle")
	}
	return w
}

// settled: one leader that accepts commits, every other node streaming
// from it.
func (w *world) settled() bool {
	l := w.leaderNode()
	if l == nil {
		return false
	}
	for _, n := range w.nodes {
		if n != l && (!n.pg.streaming() || n.pg.upstream != l.name) {
			return false
		}
	}
	return true
}

// leaderNode is the holder of the leader key when its PostgreSQL accepts
// commits.
func (w *world) leaderNode() *simNode {
	n := w.node(w.leaderKey())
	if n == nil || !n.pg.canCommit() {
		return nil
	}
	return n
}

// until runs the world until cond holds (true) or d passes (false).
func (w *world) until(d time.Duration, cond func() bool) bool {
	w.s.runUntil(w.s.now.Add(d), func() bool { return w.failed != "" || cond() })
	return w.failed == "" && cond()
}

func (w *world) runFor(d time.Duration) {
	w.s.runUntil(w.s.now.Add(d), func() bool { return w.failed != "" })
}

func (w *world) fatal(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	if w.failed != "" {
		msg = w.failed + " (" + msg + ")"
	}
	tail := w.trace[max(0, len(w.trace)-50):]
	t.Fatalf("%s\n%s", msg, strings.Join(tail, "\n"))
}

func (w *world) noViolation(t *testing.T) {
	t.Helper()
	if w.failed != "" {
		w.fatal(t, "violation")
	}
}

// others are the nodes but n.
func (w *world) others(n *simNode) []*simNode {
	var out []*simNode
	for _, o := range w.nodes {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

// TestSimFenceKillsOrphanedBackends: the leader's postmaster dies while a
// busy backend runs on (on real PostgreSQL 15 it committed seconds later:
// each backend calls setsid(), so a kill of the postmaster or of its group
// misses it). The agent sees processes of the data directory with no
// postmaster and kills them at once, then restarts in place; the orphan
// never commits beside a new primary. (Before: nothing killed it; a release
// after ttl let a replica be promoted while it still committed.)
func TestSimFenceKillsOrphanedBackends(t *testing.T) {
	w := healthy(t, simOpts{ttl: 5 * time.Second})
	w.orphanLife = 10 * time.Minute
	old := w.leaderNode()
	old.pg.die("postmaster killed by the test", true)
	if !w.until(10*time.Second, func() bool { return !w.s.now.Before(old.pg.orphanUntil) }) {
		w.fatal(t, "the orphaned backend of %s still runs", old.name)
	}
	if !w.until(60*time.Second, func() bool { return w.leaderNode() != nil }) {
		w.fatal(t, "no primary after the orphan was killed")
	}
	w.runFor(30 * time.Second)
	w.noViolation(t)
}

// TestSimMutePrimaryIsFenced: the leader's PostgreSQL runs but does not
// answer its agent (all connection slots taken). It keeps the key while
// the lease renews (no failover, no fence), and when the leader is then cut
// from etcd it is fenced before its lease can expire: a replica is
// promoted, never beside it. (Before: the failed status query read as "not
// running", a lease loss yielded Wait, and after ttl the leader released its
// key with PostgreSQL still running.)
func TestSimMutePrimaryIsFenced(t *testing.T) {
	w := healthy(t, simOpts{ttl: 5 * time.Second})
	old := w.leaderNode()
	old.pg.mute = true
	w.runFor(40 * time.Second)
	w.noViolation(t)
	if w.leaderKey() != old.name || !old.pg.canCommit() {
		w.fatal(t, "a mute leader with a healthy lease lost its key or its server (leader %q)", w.leaderKey())
	}
	if st := old.agent.Status(); st.State != "unresponsive" || st.Role != "primary" {
		w.fatal(t, "mute leader published state %q role %q; want unresponsive primary", st.State, st.Role)
	}
	w.etcdDown[old.name] = true
	if !w.until(60*time.Second, func() bool { l := w.leaderNode(); return l != nil && l != old }) {
		w.fatal(t, "no failover after the mute leader was cut from etcd")
	}
	w.noViolation(t)
	if old.pg.alive {
		w.fatal(t, "the mute former leader still runs")
	}
}

// TestSimCrashRecoveryRunsWatched: the leader's PostgreSQL crashes and its
// crash recovery takes 12 s, more than the ttl: the leader keeps the key
// (renewed meanwhile) and comes back; no replica is promoted beside it.
// Then the same with etcd cut off during the recovery: the watchdog fences
// the recovering server before the lease can expire, so the replica that
// takes over is the only primary. (Before: the long start ran with no
// renewals and the watchdog disarmed; afterwards a fresh lease armed the
// watchdog although the key was gone: two primaries.)
func TestSimCrashRecoveryRunsWatched(t *testing.T) {
	w := healthy(t, simOpts{ttl: 5 * time.Second})
	old := w.leaderNode()
	old.pg.recoveryTime = 12 * time.Second
	old.pg.die("crash", false)
	if !w.until(60*time.Second, func() bool { return w.leaderNode() == old }) {
		w.fatal(t, "the leader did not come back after crash recovery (leader %q)", w.leaderKey())
	}
	w.noViolation(t)

	old.pg.recoveryTime = 12 * time.Second
	old.pg.die("crash", false)
	w.after(2*time.Second, func() { w.etcdDown[old.name] = true })
	if !w.until(60*time.Second, func() bool { l := w.leaderNode(); return l != nil && l != old }) {
		w.fatal(t, "no failover while the leader's recovery ran cut from etcd")
	}
	w.runFor(20 * time.Second)
	w.noViolation(t)
	if old.pg.canCommit() {
		w.fatal(t, "the cut-off leader came up writable")
	}
}

// TestSimRestartThroughTheLoop: an operator's restart of the leader runs
// as a decision of the loop, with the lease renewed and the watchdog armed:
// a slow shutdown checkpoint and crash recovery do not cost the key.
func TestSimRestartThroughTheLoop(t *testing.T) {
	w := healthy(t, simOpts{ttl: 5 * time.Second})
	l := w.leaderNode()
	l.pg.checkpointTime = 7 * time.Second
	done := l.agent.restarts.add()
	if !w.until(30*time.Second, func() bool { return len(done) == 1 }) {
		w.fatal(t, "restart not done")
	}
	if err := <-done; err != nil {
		w.fatal(t, "restart: %v", err)
	}
	if !w.until(10*time.Second, func() bool { return w.leaderNode() == l }) {
		w.fatal(t, "leader changed across a restart")
	}
	w.noViolation(t)
	if w.watchdogFences[l.name] != 0 {
		w.fatal(t, "restart fenced by the watchdog")
	}
}

// TestSimSlowEtcdDoesNotFenceAHealthyPrimary: every etcd call of the leader
// takes 800 ms for two minutes at ttl 5 (all succeed; the lease is never at
// risk): the watchdog, fed right after each renewal from its send time,
// never fences. (Before: fed only at the end of a loop that took 4 s, it
// fenced a healthy primary 12 times in 120 s.) Then a switchover whose
// checkpoint takes 7 s completes without a fence either.
func TestSimSlowEtcdDoesNotFenceAHealthyPrimary(t *testing.T) {
	w := healthy(t, simOpts{ttl: 5 * time.Second})
	l := w.leaderNode()
	for _, n := range w.nodes {
		w.etcdSlow[n.name] = 800 * time.Millisecond
	}
	w.runFor(120 * time.Second)
	w.noViolation(t)
	if f := w.watchdogFences[l.name]; f != 0 || w.leaderNode() != l {
		w.fatal(t, "under 800 ms etcd calls: %d watchdog fences of the leader, leader now %q", f, w.leaderKey())
	}
	clear(w.etcdSlow)
	l.pg.checkpointTime = 7 * time.Second
	_ = w.mem.Client("operator", time.Second).SetFailover(context.Background(), dcs.Failover{Kind: "switchover", Leader: l.name, RequestedAt: w.s.now}, 0)
	if !w.until(60*time.Second, func() bool { n := w.leaderNode(); return n != nil && n != l }) {
		w.fatal(t, "switchover with a 7 s checkpoint did not complete")
	}
	w.noViolation(t)
	if f := w.watchdogFences[l.name]; f != 0 {
		w.fatal(t, "switchover with a 7 s checkpoint fenced by the watchdog %d times", f)
	}
}

// TestSimDeadAgentsWatchdogFencesAtOnce: kill -9 of the leader's agent. Its
// watchdog fences at once and exits (an orphan that waited for the old
// deadline would later kill the primary of the agent restarted meanwhile);
// a replica takes over; the restarted agent starts its own watchdog and
// rejoins as a replica, and nothing fences it.
func TestSimDeadAgentsWatchdogFencesAtOnce(t *testing.T) {
	w := healthy(t, simOpts{ttl: 10 * time.Second})
	old := w.leaderNode()
	wd := old.wdProc
	w.killAgent(old)
	if old.pg.alive || !wd.gone {
		w.fatal(t, "after kill -9 of the agent: postgres alive %v, watchdog gone %v; want fenced and gone at once", old.pg.alive, wd.gone)
	}
	if !w.until(60*time.Second, func() bool { l := w.leaderNode(); return l != nil && l != old }) {
		w.fatal(t, "no failover")
	}
	w.start(old, 0)
	if !w.until(60*time.Second, w.settled) {
		w.fatal(t, "the old leader did not rejoin")
	}
	fences := w.watchdogFences[old.name]
	w.runFor(30 * time.Second)
	w.noViolation(t)
	if w.watchdogFences[old.name] != fences || !old.pg.streaming() {
		w.fatal(t, "the rejoined replica was fenced (%d) or stopped streaming", w.watchdogFences[old.name]-fences)
	}
}

// TestSimUnguardedNodeIsNotPromoted: a replica whose watchdog cannot run is
// never promoted (process mode says so and refuses); with watchdog.mode
// required, a leader that loses its watchdog steps down.
func TestSimUnguardedNodeIsNotPromoted(t *testing.T) {
	w := healthy(t, simOpts{ttl: 5 * time.Second})
	old := w.leaderNode()
	rs := w.others(old)
	rs[0].wd.fail = true
	w.runFor(3 * time.Second)
	w.hostLoss(old)
	if !w.until(60*time.Second, func() bool { return w.leaderNode() != nil }) {
		w.fatal(t, "no failover")
	}
	if got := w.leaderNode(); got != rs[1] {
		w.fatal(t, "promoted %s; want %s (the other one cannot be fenced)", got.name, rs[1].name)
	}
	// Now the only replica left is unguarded: no one may be promoted.
	w.hostLoss(rs[1])
	w.runFor(60 * time.Second)
	w.noViolation(t)
	if l := w.leaderNode(); l != nil {
		w.fatal(t, "unguarded %s promoted", l.name)
	}
	if st := rs[0].agent.Status(); !strings.Contains(st.Reason, "watchdog") {
		w.fatal(t, "the unguarded replica does not say why it waits: %q", st.Reason)
	}
}

func TestSimRequiredWatchdogLostStepsDown(t *testing.T) {
	w := healthy(t, simOpts{ttl: 5 * time.Second, required: true})
	old := w.leaderNode()
	old.wd.fail = true
	if !w.until(60*time.Second, func() bool { l := w.leaderNode(); return l != nil && l != old }) {
		w.fatal(t, "a leader without its required watchdog kept leading (%q)", w.leaderKey())
	}
	w.noViolation(t)
}

// TestSimFrozenAgentAndWatchdog: both the leader's agent and its watchdog
// are stopped while PostgreSQL runs on: nothing on that host can fence it.
// The replicas see the key expire, but the last leader's server still
// answers as a primary when asked directly: no one is promoted (the
// cluster stays on that primary) until the host is thawed and its agent
// fences it.
func TestSimFrozenAgentAndWatchdog(t *testing.T) {
	w := healthy(t, simOpts{ttl: 5 * time.Second})
	old := w.leaderNode()
	w.freezeAgent(old)
	w.freezeWatchdog(old)
	w.runFor(40 * time.Second)
	w.noViolation(t)
	if w.leaderKey() != "" {
		w.fatal(t, "the frozen leader's key did not expire (%q)", w.leaderKey())
	}
	for _, r := range w.others(old) {
		if st := r.agent.Status(); !strings.Contains(st.Reason, "still runs as a primary") {
			w.fatal(t, "%s does not say why it waits: %q", r.name, st.Reason)
		}
	}
	w.thaw(old)
	if !w.until(60*time.Second, func() bool { return w.leaderNode() != nil }) {
		w.fatal(t, "no leader after the thaw")
	}
	w.runFor(20 * time.Second)
	w.noViolation(t)
}

// TestSimLostRaceIsNotPublished: two replicas race for the key; the one
// that loses publishes no leadership (the simulation checks it after every
// step: before, acquire returned nil on a lost race and publish took
// leadership from the action attempted).
func TestSimLostRaceIsNotPublished(t *testing.T) {
	for seed := range int64(20) {
		w := healthySeed(t, seed, simOpts{ttl: 5 * time.Second})
		w.hostLoss(w.leaderNode())
		if !w.until(60*time.Second, func() bool { return w.leaderNode() != nil }) {
			w.fatal(t, "no failover")
		}
		w.runFor(5 * time.Second)
		w.noViolation(t)
		w.s.shutdown()
	}
}

// setPause sets the cluster's pause flag as `pgwarden pause` / `resume`.
func (w *world) setPause(t *testing.T, on bool) {
	t.Helper()
	w.setDynamic(t, func(d *config.Dynamic) { d.Pause = on })
}

// setDynamic edits the dynamic configuration as `edit-config` does.
func (w *world) setDynamic(t *testing.T, edit func(*config.Dynamic)) {
	t.Helper()
	op := w.mem.Client("operator", time.Second)
	cl, err := op.Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := config.ParseDynamic(cl.Config)
	if err != nil {
		t.Fatal(err)
	}
	edit(&dyn)
	raw, _ := json.Marshal(dyn)
	if err := op.SetConfig(context.Background(), raw, cl.ConfigRevision); err != nil {
		t.Fatal(err)
	}
}

func (w *world) request(t *testing.T, f dcs.Failover) {
	t.Helper()
	f.RequestedAt = w.s.now
	if err := w.mem.Client("operator", time.Second).SetFailover(context.Background(), f, 0); err != nil {
		t.Fatal(err)
	}
}

// pausedLeaderAgentKilled pauses a healthy cluster of that ttl, kills its
// leader's agent (maintenance) and runs for after.
func pausedLeaderAgentKilled(t *testing.T, ttl, after time.Duration) (*world, *simNode) {
	t.Helper()
	w := healthy(t, simOpts{ttl: ttl})
	old := w.leaderNode()
	w.setPause(t, true)
	w.runFor(3 * time.Second)
	w.killAgent(old)
	w.runFor(after)
	return w, old
}

// pausedLeaderStoppedThenResumed pauses a healthy cluster, kills its
// leader's agent (maintenance), resumes and runs for d.
func pausedLeaderStoppedThenResumed(t *testing.T, d time.Duration) (*world, *simNode) {
	t.Helper()
	w, old := pausedLeaderAgentKilled(t, 5*time.Second, 2*time.Second)
	if !old.pg.canCommit() {
		w.fatal(t, "a paused cluster's primary was fenced when its agent went")
	}
	w.setPause(t, false)
	w.runFor(d)
	return w, old
}

// TestSimPausedLeaderAgentKilledThenResumed: the cluster is paused and the
// leader's agent killed (maintenance): its PostgreSQL runs on and the
// watchdog, armed "keep", leaves it running. After resume no replica is
// promoted while the last leader's server answers as a primary when asked
// directly; its restarted agent takes the key back. (Before: the replicas
// skipped the unreachable leader's REST API and one was promoted beside it.)
func TestSimPausedLeaderAgentKilledThenResumed(t *testing.T) {
	w, old := pausedLeaderStoppedThenResumed(t, 30*time.Second)
	w.noViolation(t)
	for _, r := range w.others(old) {
		if r.pg.canCommit() {
			w.fatal(t, "%s promoted while the last leader still ran as primary", r.name)
		}
		if st := r.agent.Status(); !strings.Contains(st.Reason, "still runs as a primary") {
			w.fatal(t, "%s does not say why it waits: %q", r.name, st.Reason)
		}
	}
	w.start(old, 0)
	if !w.until(30*time.Second, func() bool { return w.leaderNode() == old }) {
		w.fatal(t, "the restarted agent did not take its key back (leader %q)", w.leaderKey())
	}
	w.noViolation(t)
}

// TestSimRestartedAgentGuardsAtOnce: a paused leader's agent is stopped,
// the cluster resumed, and the leader's lease expires while its server
// runs on (the edge the pause allows). Its agent comes back with etcd
// unreachable, so its first renewal and cluster read each wait
// retry_timeout; the host freezes meanwhile and a replica, finding the
// last leader's server unreachable, is promoted. At the thaw the watchdog
// must strike before the old server commits again. (Before: the restarted
// agent armed its watchdog only after its first decision, and at the thaw
// both servers accepted commits: sim seed 9463.)
func TestSimRestartedAgentGuardsAtOnce(t *testing.T) { restartedAgentFrozenAtOnce(t, false) }

// restartedAgentFrozenAtOnce is that scenario; mute: its server answers no
// status query (all connection slots taken) while its sessions commit.
func restartedAgentFrozenAtOnce(t *testing.T, mute bool) {
	t.Helper()
	w, old := pausedLeaderStoppedThenResumed(t, 15*time.Second)
	if !old.pg.canCommit() {
		w.fatal(t, "the paused leader's server did not run on")
	}
	old.pg.mute = mute
	w.etcdDown[old.name] = true
	w.start(old, 0)
	w.runFor(300 * time.Millisecond)
	w.freezeHost(old)
	if !w.until(30*time.Second, func() bool {
		for _, r := range w.others(old) {
			if r.pg.canCommit() {
				return true
			}
		}
		return false
	}) {
		w.fatal(t, "no replica was promoted while the last leader's host was frozen")
	}
	w.thaw(old)
	w.runFor(2 * time.Second)
	w.noViolation(t)
	if old.pg.canCommit() {
		w.fatal(t, "the old primary accepts commits after its thaw")
	}
}

// TestSimPausedLeaderCutFromEtcdFences: a paused leader that cannot renew
// its lease fences itself like any other, whatever its cached pause flag
// says; after resume a replica takes over, never beside it. (Before: a
// paused leader cut off from etcd kept its cached pause flag and never
// fenced after the operator resumed.)
func TestSimPausedLeaderCutFromEtcdFences(t *testing.T) {
	w, old := pausedLeaderCutFromEtcd(t)
	w.setPause(t, false)
	if !w.until(60*time.Second, func() bool { l := w.leaderNode(); return l != nil && l != old }) {
		w.fatal(t, "no failover after resume")
	}
	w.noViolation(t)
}

// TestSimManualFailoverWhilePausedIsChecked: while paused, with the leader's
// agent dead and its PostgreSQL running, an operator's failover to a
// replica is refused (the last leader's server still answers as primary);
// once that server is stopped, it goes ahead. (Before: a manual failover in
// pause went straight to acquire, without the checks.)
func TestSimManualFailoverWhilePausedIsChecked(t *testing.T) {
	w := healthy(t, simOpts{ttl: 5 * time.Second})
	old := w.leaderNode()
	w.setPause(t, true)
	w.runFor(2 * time.Second)
	w.killAgent(old)
	w.runFor(8 * time.Second) // its lease expires
	target := w.others(old)[0]
	w.request(t, dcs.Failover{Kind: "failover", Candidate: target.name, Force: true})
	w.runFor(10 * time.Second)
	w.noViolation(t)
	if target.pg.canCommit() {
		w.fatal(t, "a manual failover in pause promoted %s beside the running primary", target.name)
	}
	old.pg.fenceAll("stopped by the operator")
	if !w.until(30*time.Second, func() bool { return w.leaderNode() == target }) {
		w.fatal(t, "the manual failover did not go ahead once the old primary was down")
	}
	w.noViolation(t)
}

// TestSimManualFailoverNeverPicksNoFailover: a forced manual failover naming
// a priority-0 member never promotes it. (Before: with no leader it was
// accepted and promoted.)
func TestSimManualFailoverNeverPicksNoFailover(t *testing.T) {
	w := healthy(t, simOpts{ttl: 5 * time.Second, priorities: []int{100, 100, 0}})
	zero := w.node("node3")
	if w.leaderNode() == zero {
		w.fatal(t, "priority-0 node3 bootstrapped the cluster")
	}
	w.hostLoss(w.leaderNode())
	w.request(t, dcs.Failover{Kind: "failover", Candidate: zero.name, Force: true})
	w.runFor(40 * time.Second)
	w.noViolation(t)
	if zero.pg.canCommit() {
		w.fatal(t, "priority-0 %s promoted by a forced manual failover", zero.name)
	}
}

// TestSimDivergedFormerPrimaryNotPromoted: the leader dies, a replica is
// promoted and takes commits; the old primary, started by hand while its
// agent is down, writes more on its old timeline (a higher raw LSN). When
// every node comes back, it is not promoted over the newest timeline.
func TestSimDivergedFormerPrimaryNotPromoted(t *testing.T) {
	w := healthy(t, simOpts{ttl: 5 * time.Second})
	old := w.leaderNode()
	w.hostLoss(old)
	if !w.until(60*time.Second, func() bool { l := w.leaderNode(); return l != nil && l != old }) {
		w.fatal(t, "no failover")
	}
	w.runFor(5 * time.Second)
	for range 2000 {
		w.nextID++
		old.pg.log = append(old.pg.log, w.nextID)
	}
	for _, n := range w.others(old) {
		w.hostLoss(n)
	}
	w.runFor(15 * time.Second) // every key expires
	for _, n := range w.nodes {
		w.start(n, 0)
	}
	if !w.until(60*time.Second, func() bool { return w.leaderNode() != nil }) {
		w.fatal(t, "no leader")
	}
	if w.leaderNode() == old {
		w.fatal(t, "the diverged former primary was promoted")
	}
	w.noViolation(t)
}

// TestSimCascadeInSynchronousMode: node3 cascades from node2 (which has
// priority 0); in synchronous mode only a standby streaming from the leader
// may be synchronous, so none is named and commits are acknowledged.
// (Before: node3 was chosen, never acknowledged anything, and every commit
// blocked.)
func TestSimCascadeInSynchronousMode(t *testing.T) {
	w := healthy(t, simOpts{ttl: 5 * time.Second, cascade: true, priorities: []int{100, 0, 200}})
	if l := w.leaderNode(); l.name != "node1" {
		w.request(t, dcs.Failover{Kind: "switchover", Leader: l.name, Candidate: "node1"})
		if !w.until(60*time.Second, func() bool { return w.leaderNode() == w.node("node1") && w.settled() }) {
			w.fatal(t, "switchover to node1 did not complete")
		}
	}
	if !w.until(20*time.Second, func() bool { return w.node("node3").pg.upstream == "node2" }) {
		w.fatal(t, "node3 does not cascade from node2 (upstream %q)", w.node("node3").pg.upstream)
	}
	w.setDynamic(t, func(d *config.Dynamic) { d.SynchronousMode = true })
	w.dyn.SynchronousMode = true // the checks of the simulation too
	l := w.leaderNode()
	w.runFor(5 * time.Second)
	before := len(w.acked)
	w.runFor(20 * time.Second)
	if got := len(w.acked) - before; got < 100 {
		w.fatal(t, "only %d commits acknowledged in 20 s in synchronous mode with a cascade (sync names %v)", got, l.pg.syncNames)
	}
	if slices.Contains(l.pg.syncNames, "node3") {
		w.fatal(t, "the cascaded node3 named synchronous: %v", l.pg.syncNames)
	}
	w.noViolation(t)
}

// TestSimPausedLeaderTakesItsKeyBack: a paused leader cut from etcd
// fences itself; once etcd is back, still paused, it takes its key back
// and restarts, and it is the only primary. (Before: every member said
// "paused: no automatic failover" and there was no primary until an
// operator acted.)
func TestSimPausedLeaderTakesItsKeyBack(t *testing.T) {
	w, old := pausedLeaderCutFromEtcd(t)
	w.runFor(10 * time.Second)
	w.etcdDown[old.name] = false
	if !w.until(30*time.Second, func() bool { return w.leaderNode() == old && old.pg.canCommit() }) {
		w.fatal(t, "the paused leader did not come back 30 s after etcd did")
	}
	w.noViolation(t)
}

// pausedLeaderCutFromEtcd pauses a healthy cluster, cuts its leader from
// etcd and returns once that leader has fenced itself (ttl 5).
func pausedLeaderCutFromEtcd(t *testing.T) (*world, *simNode) {
	t.Helper()
	w := healthy(t, simOpts{ttl: 5 * time.Second})
	old := w.leaderNode()
	w.setPause(t, true)
	w.runFor(3 * time.Second)
	w.etcdDown[old.name] = true
	if !w.until(10*time.Second, func() bool { return !old.pg.canCommit() }) {
		w.fatal(t, "a paused leader cut from etcd still accepts writes 10 s later (ttl 5)")
	}
	return w, old
}

// etcdOutage cuts every member from etcd (a quorum loss as the agents see
// it), with failsafe_mode set as given.
func etcdOutage(t *testing.T, failsafe bool) (*world, *simNode) {
	t.Helper()
	w := healthy(t, simOpts{ttl: 5 * time.Second})
	w.setDynamic(t, func(d *config.Dynamic) { d.FailsafeMode = failsafe })
	w.runFor(3 * time.Second)
	old := w.leaderNode()
	for _, n := range w.nodes {
		w.etcdDown[n.name] = true
	}
	return w, old
}

// TestSimFailsafeKeepsThePrimary: with failsafe_mode, a leader whose
// members all confirm it keeps accepting writes through an etcd outage of
// six ttls, no one else is promoted, and it holds the key again once etcd
// is back. Without it, the leader fences within the ttl.
func TestSimFailsafeKeepsThePrimary(t *testing.T) {
	w, old := etcdOutage(t, true)
	for i := 0; i < 30; i++ {
		w.runFor(time.Second)
		if !old.pg.canCommit() {
			w.fatal(t, "with failsafe and every member confirming, the leader stopped accepting writes %d s into the etcd outage", i+1)
		}
	}
	for _, n := range w.nodes {
		w.etcdDown[n.name] = false
	}
	if !w.until(20*time.Second, func() bool { return w.leaderNode() == old }) {
		w.fatal(t, "etcd back: the failsafe leader does not hold the key again (leader %q)", w.leaderKey())
	}
	w.runFor(10 * time.Second)
	if w.leaderNode() != old {
		w.fatal(t, "the leader changed after etcd came back (leader %q)", w.leaderKey())
	}
	w.noViolation(t)

	w, old = etcdOutage(t, false)
	if !w.until(6*time.Second, func() bool { return !old.pg.canCommit() }) {
		w.fatal(t, "without failsafe the leader still accepts writes 6 s into an etcd outage (ttl 5)")
	}
	w.noViolation(t)
}

// TestSimFailsafeUnconfirmedFences: one member cannot be reached over
// REST during the outage: the leader is not confirmed and fences within
// the ttl, and no one is promoted while etcd is away.
func TestSimFailsafeUnconfirmedFences(t *testing.T) {
	w, old := etcdOutage(t, true)
	cut := w.others(old)[0]
	w.restCut[[2]string{old.name, cut.name}] = true
	if !w.until(6*time.Second, func() bool { return !old.pg.canCommit() }) {
		w.fatal(t, "a failsafe leader with a member it cannot reach still accepts writes 6 s into the outage (ttl 5)")
	}
	w.runFor(20 * time.Second)
	for _, n := range w.nodes {
		if n.pg.canCommit() {
			w.fatal(t, "%s accepts writes while etcd is away and failsafe is not confirmed", n.name)
		}
	}
	w.noViolation(t)
}

// TestSimFailingBootstrapBacksOff: initdb fails on the only node, every
// time. The agent retries after loop_wait, doubling up to the ttl, and says
// why without a log line per attempt. (Before: one attempt per loop, each
// logged, and on a real node, woken by its own claim's watch events, about
// 140 a second.)
func TestSimFailingBootstrapBacksOff(t *testing.T) {
	w := newWorld(t, 1, simOpts{nodes: 1, ttl: 10 * time.Second, countLogs: true})
	t.Cleanup(w.s.shutdown)
	n := w.nodes[0]
	n.pg.bootstrapErr = errors.New("write the temporary password file: permission denied")
	w.runFor(5 * time.Second)
	before, lines := n.pg.bootstraps, w.logLines[n.name]
	w.runFor(60 * time.Second)
	attempts, logged := n.pg.bootstraps-before, w.logLines[n.name]-lines
	// After the first few doublings an attempt every ttl (10 s): 6-7 a
	// minute; one a loop (loop_wait 1 s) would be 60.
	if attempts < 4 || attempts > 10 {
		w.fatal(t, "%d bootstrap attempts in a minute, want 4-10 (backing off to the ttl)", attempts)
	}
	// Per attempt at most the decision to bootstrap, the race won and the
	// decision to wait.
	if logged > 3*attempts+2 {
		w.fatal(t, "%d log lines in a minute for %d attempts", logged, attempts)
	}
	st := n.agent.Status()
	if st.Failing != "bootstrap" || !strings.Contains(st.LastError, "permission denied") || st.Failures < attempts {
		w.fatal(t, "status does not show the failing action: %q %q %d", st.Failing, st.LastError, st.Failures)
	}
	if m := w.mem.Client("operator", time.Second); m != nil {
		c, err := m.Cluster(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if rec := c.Member(n.name); rec == nil || !strings.Contains(rec.Error, "bootstrap: write the temporary") {
			w.fatal(t, "the member record does not carry the error: %+v", rec)
		}
	}
	// Fixed: the next attempt succeeds and the cluster comes up.
	n.pg.bootstrapErr = nil
	if !w.until(30*time.Second, func() bool { return w.leaderNode() == n && n.agent.Status().IsLeader }) {
		w.fatal(t, "no leader after the cause was fixed")
	}
	if st := n.agent.Status(); st.Failing != "" {
		w.fatal(t, "still failing after success: %q", st.Failing)
	}
}

// TestSimReinitializeThroughTheLoop: an operator's reinitialize of a
// replica is decided and run by its loop (stop, wipe, clone), and the
// replica streams again; one asked of the leader is refused with the
// reason, and nothing else changes.
func TestSimReinitializeThroughTheLoop(t *testing.T) {
	w := healthy(t, simOpts{})
	l := w.leaderNode()
	r := w.others(l)[0]
	done := r.agent.reinits.add()
	if !w.until(60*time.Second, func() bool { return len(done) == 1 }) {
		w.fatal(t, "reinitialize not answered")
	}
	if err := <-done; err != nil {
		w.fatal(t, "reinitialize: %v", err)
	}
	if r.pg.wipes != 1 {
		w.fatal(t, "%s wiped %d times, want 1", r.name, r.pg.wipes)
	}
	if !w.until(30*time.Second, func() bool { return w.settled() }) {
		w.fatal(t, "the reinitialized replica does not stream again")
	}
	refused := l.agent.reinits.add()
	if !w.until(30*time.Second, func() bool { return len(refused) == 1 }) {
		w.fatal(t, "reinitialize of the leader not answered")
	}
	if err := <-refused; !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "is the leader") {
		w.fatal(t, "reinitialize of the leader: %v, want refused", err)
	}
	if w.leaderNode() != l || l.pg.wipes != 0 {
		w.fatal(t, "the leader changed or was wiped")
	}
	w.noViolation(t)
}
