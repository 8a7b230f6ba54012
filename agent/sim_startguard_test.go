package agent

import (
	"testing"
	"time"
)

// Scenarios (found in review) against the start arming (guard.go guardAtStart).

// TestSimPausedRestartSlowEtcdRestartsPrimary: a paused cluster, the
// leader's agent restarted for maintenance while that node's etcd calls
// take 1.5 s (slower than loop_wait 1 s, within retry_timeout 3 s: every
// call succeeds). The watchdog armed at the start strikes at one loop_wait
// (a frozen host there must not outlive a promotion beside it); the agent
// knows it fenced its own primary, takes its key back and restarts it.
func TestSimPausedRestartSlowEtcdRestartsPrimary(t *testing.T) {
	// Long enough for its lease, and the leader key, to expire.
	w, old := pausedLeaderAgentKilled(t, 10*time.Second, 15*time.Second)
	if !old.pg.canCommit() || w.leaderKey() != "" {
		w.fatal(t, "a paused cluster's primary was fenced when its agent went, or its key lives (%q)", w.leaderKey())
	}
	w.etcdSlow[old.name] = 1500 * time.Millisecond
	w.start(old, 0)
	if !w.until(30*time.Second, func() bool { return old.pg.canCommit() && w.leaderKey() == old.name && old.agent.Status().IsLeader }) {
		w.fatal(t, "the paused leader is not back: %d watchdog fences, commits %v, leader key %q, %q",
			w.watchdogFences[old.name], old.pg.canCommit(), w.leaderKey(), old.agent.Status().Reason)
	}
	if f := w.watchdogFences[old.name]; f > 1 {
		w.fatal(t, "%d watchdog fences, want at most the one at the start", f)
	}
	w.noViolation(t)
}

// TestSimPausedRestartSlowEtcdOutage: the same fence as above, then the
// cluster stays paused: how long is it without any primary?
func TestSimPausedRestartSlowEtcdOutage(t *testing.T) {
	w, old := pausedLeaderAgentKilled(t, 10*time.Second, time.Second)
	w.etcdSlow[old.name] = 1500 * time.Millisecond
	w.start(old, 0)
	w.runFor(5 * time.Second)
	delete(w.etcdSlow, old.name) // the spike is over
	w.runFor(120 * time.Second)
	w.noViolation(t)
	if len(w.committers()) == 0 {
		w.fatal(t, "paused cluster without a writable primary 2 min after a 5 s etcd latency spike at an agent restart; %s says %q",
			old.name, old.agent.Status().Reason)
	}
}

// TestSimPausedRestartKilledDuringFirstStep: a paused cluster's leader
// agent is restarted, and that new agent is killed again while its first
// renewal is in flight (800 ms etcd latency: below loop_wait, so the start
// arming alone does not fire). In pause the end of the agent must not
// fence (README "Pause"); the start arming is sent with keepOnExit false.
func TestSimPausedRestartKilledDuringFirstStep(t *testing.T) {
	w, old := pausedLeaderAgentKilled(t, 10*time.Second, time.Second)
	w.etcdSlow[old.name] = 800 * time.Millisecond
	w.start(old, 0)
	w.runFor(400 * time.Millisecond)
	w.killAgent(old)
	w.runFor(time.Second)
	w.noViolation(t)
	if !old.pg.canCommit() {
		w.fatal(t, "paused cluster: the primary was fenced when its restarted agent was stopped again during its first step")
	}
}

// TestSimRestartedAgentMutePrimaryWindow: TestSimRestartedAgentGuardsAtOnce
// (sim seed 9463) with the old primary's connection slots all taken (it
// runs and its sessions commit, but the agent's status query waits out its
// timeout). guardAtStart asks PostgreSQL its state before it arms, so the
// arming waits for that query; the host freezes meanwhile, a replica is
// promoted, and at the thaw both servers commit.
func TestSimRestartedAgentMutePrimaryWindow(t *testing.T) { restartedAgentFrozenAtOnce(t, true) }
