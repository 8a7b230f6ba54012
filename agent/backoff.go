package agent

import (
	"fmt"
	"strings"
	"time"
)

// A failed action is retried after loop_wait, then after twice as long
// each time it fails again, up to the ttl. Without it a failure that
// changes something the loop watches (bootstrap's claim in etcd, made and
// given back) woke the loop at once: about 140 attempts a second, each
// taking part in the initialize race, and megabytes of log.
//
// Some actions are never held back, because waiting could leave a server
// writable that must not be (fence, demote, release, a non-leader's
// writable server being turned into a standby) or lose the key (the
// leader's heartbeat), or because an operator waits for the answer
// (restart).

// failing is the loop's memory of the action that last failed.
type failing struct {
	// Action and Target name it (its reason may change between loops).
	Action   Action
	Target   string
	Failures int
	// Since is the first of these failures; Next is when it may run again.
	Since, Next time.Time
	Err         string
	// Quiet is how many failures since the last log line said nothing new.
	Quiet int
}

// retriedAtOnce says whether d runs whatever its past failures.
func retriedAtOnce(o Observation, d Decision) bool {
	switch d.Action {
	case ActFence, ActDemote, ActRelease, ActHeartbeat, ActRestart, ActRefuseRestart, ActWait, ActRefuse,
		ActReinitialize, ActRefuseReinitialize:
		return true
	}
	// A server that may accept writes without this member holding the key
	// is made a standby (follow, rewind) as soon as possible.
	return o.PG.MayWrite() && o.leaderName() != o.Node.Name
}

// name is the failing action as operators read it: "clone node2".
func (f failing) name() string {
	if f.Target == "" {
		return f.Action.String()
	}
	return f.Action.String() + " " + f.Target
}

// summary is the action with its error, named once.
func (f failing) summary() string {
	if strings.HasPrefix(f.Err, f.Action.String()+":") {
		return f.Err
	}
	return f.name() + ": " + f.Err
}

func (f failing) same(d Decision) bool {
	return f.Failures > 0 && f.Action == d.Action && f.Target == d.Target
}

// hold returns the decision to carry out: d, or a wait while d backs off.
func (f failing) hold(o Observation, d Decision) (Decision, bool) {
	if !f.same(d) || retriedAtOnce(o, d) || !o.Now.Before(f.Next) {
		return d, false
	}
	return Decision{Action: ActWait, Reason: fmt.Sprintf("%s backs off after failing (%s)", d, f.Err)}, true
}

// retryLog is what the loop logs after an action ran.
type retryLog int

const (
	logNothing retryLog = iota
	// logFailed: a new failure, or one whose error changed.
	logFailed
	// logRecovered: the action succeeded after failing.
	logRecovered
)

// backoffDelay is the wait after the n-th failure in a row of action a.
// Taking the key is retried every loop_wait, never later: while no one
// holds it the cluster has no primary, and the other members defer to this
// one as the best candidate.
func backoffDelay(a Action, n int, loopWait, ttl time.Duration) time.Duration {
	d := loopWait
	if a == ActAcquire {
		return d
	}
	for i := 1; i < n && d < ttl; i++ {
		d *= 2
	}
	return min(d, max(ttl, loopWait))
}

// record returns the memory after d ran at now with err, and what to log.
// A success of the failing action, or of any other action that does
// something, forgets it; a wait does not (a failure that changes what the
// loop sees is often followed by a wait, then by the same action again).
func (f failing) record(d Decision, err error, now time.Time, loopWait, ttl time.Duration) (failing, retryLog) {
	if err == nil {
		switch {
		case f.same(d):
			return failing{}, logRecovered
		case f.Failures > 0 && d.Action != ActWait && d.Action != ActRefuse:
			return failing{}, logNothing
		case f.Failures > 0 && now.After(f.Next.Add(ttl)):
			// Not wanted again for a ttl past its retry time: whatever
			// failed resolved itself (a start reported failed while the
			// server came up), and an operator must not see it for ever.
			return failing{}, logNothing
		}
		return f, logNothing
	}
	msg := err.Error()
	if !f.same(d) {
		f = failing{Action: d.Action, Target: d.Target, Since: now}
	}
	f.Failures++
	f.Next = now.Add(backoffDelay(d.Action, f.Failures, loopWait, ttl))
	if f.Failures > 1 && f.Err == msg {
		f.Quiet++
		return f, logNothing
	}
	// The caller reads how many failures went unlogged from its old value.
	f.Err, f.Quiet = msg, 0
	return f, logFailed
}

// logRetry logs how d ended (err), as record said to (what): a failure
// once per change, with how many went unlogged since the last line (from
// prev, the memory before d ran), and a recovery.
func (a *Agent) logRetry(d Decision, err error, prev failing, what retryLog) {
	switch what {
	case logFailed:
		args := []any{"action", d.Action.String(), "target", d.Target, "error", err, "failures", a.st.fail.Failures,
			"retry_in", a.st.fail.Next.Sub(a.d.Clock.Now()).Round(time.Millisecond)}
		if prev.same(d) {
			args = append(args, "unlogged_failures", prev.Quiet)
		}
		a.log.Error("action failed", args...)
	case logRecovered:
		a.log.Info("action succeeded after failing", "action", d.Action.String(), "target", d.Target,
			"failures", prev.Failures, "unlogged_failures", prev.Quiet, "since", prev.Since.Format(time.RFC3339))
	}
}
