package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
)

// SwitchoverRequest is a planned change of leader. Leader, when set, must
// be the current leader; Candidate "" picks the best eligible replica;
// ScheduledAt zero means now.
type SwitchoverRequest struct {
	Leader      string
	Candidate   string
	ScheduledAt time.Time
}

// FailoverRequest is a manual failover to Candidate, also possible when no
// leader is healthy. Force skips the lag check.
type FailoverRequest struct {
	Candidate string
	Force     bool
}

// completionBound is how long an operator request waits for the new leader.
const completionBound = 30 * time.Second

// Switchover checks the request against the cluster (ErrPrecondition with
// the reason when it is impossible), records it in the failover key, and,
// unless it is scheduled, waits until the new leader accepts writes
// (ErrNotCompleted when it did not within a bound). It reports whether the
// request was scheduled for later.
func (a *Agent) Switchover(ctx context.Context, r SwitchoverRequest) (bool, error) {
	c, err := a.freshCluster(ctx)
	if err != nil {
		return false, fmt.Errorf("%w: read cluster: %v", ErrNotCompleted, err)
	}
	if c.Leader == nil {
		return false, fmt.Errorf("%w: the cluster has no leader (use failover)", ErrPrecondition)
	}
	leader := c.Leader.Name
	if r.Leader != "" && r.Leader != leader {
		return false, fmt.Errorf("%w: %s is not the leader (%s is)", ErrPrecondition, r.Leader, leader)
	}
	if r.Candidate != "" && c.Member(r.Candidate) == nil {
		return false, fmt.Errorf("%w: no member named %s", ErrPrecondition, r.Candidate)
	}
	if r.Candidate == leader {
		return false, fmt.Errorf("%w: candidate %s is already the leader", ErrPrecondition, leader)
	}
	dyn := a.currentDynamic(c)
	if dyn.Pause && r.Candidate == "" {
		return false, fmt.Errorf("%w: the cluster is paused: name a candidate", ErrPrecondition)
	}
	target, why := switchoverTarget(c, leader, r.Candidate, dyn.SynchronousMode)
	if target == "" {
		return false, fmt.Errorf("%w: %s", ErrPrecondition, why)
	}
	now := a.d.Clock.Now()
	scheduled := !r.ScheduledAt.IsZero() && r.ScheduledAt.After(now)
	if !r.ScheduledAt.IsZero() && !scheduled && now.Sub(r.ScheduledAt) > time.Minute {
		return false, fmt.Errorf("%w: scheduled_at %s is in the past", ErrBadRequest, r.ScheduledAt.Format(time.RFC3339))
	}
	f := dcs.Failover{Kind: "switchover", Leader: leader, Candidate: r.Candidate, RequestedAt: now, Source: SourceOf(ctx)}
	if scheduled {
		f.ScheduledAt = r.ScheduledAt
	}
	if err := a.putFailover(ctx, c, f); err != nil {
		return false, err
	}
	if scheduled {
		a.log.Info("switchover scheduled", "candidate", target, "at", r.ScheduledAt)
		return true, nil
	}
	return false, a.awaitLeader(ctx, leader, r.Candidate)
}

// CancelSwitchover deletes a pending (scheduled) switchover.
func (a *Agent) CancelSwitchover(ctx context.Context) error {
	c, err := a.freshCluster(ctx)
	if err != nil {
		return fmt.Errorf("%w: read cluster: %v", ErrNotCompleted, err)
	}
	if c.Failover == nil {
		return fmt.Errorf("%w: no switchover is pending", ErrPrecondition)
	}
	return a.d.DCS.DeleteFailover(ctx, c.Failover.Revision)
}

// Failover makes Candidate the leader. With a healthy leader it behaves as
// a switchover to Candidate; without one the candidate takes the key even
// if it is not the best (the operator chose it), but never while another
// member still runs as primary.
func (a *Agent) Failover(ctx context.Context, r FailoverRequest) error {
	if r.Candidate == "" {
		return fmt.Errorf("%w: failover needs a candidate", ErrBadRequest)
	}
	c, err := a.freshCluster(ctx)
	if err != nil {
		return fmt.Errorf("%w: read cluster: %v", ErrNotCompleted, err)
	}
	m := c.Member(r.Candidate)
	if m == nil {
		return fmt.Errorf("%w: no member named %s", ErrPrecondition, r.Candidate)
	}
	if c.Leader != nil && c.Leader.Name == r.Candidate {
		return fmt.Errorf("%w: candidate %s is already the leader", ErrPrecondition, r.Candidate)
	}
	if m.State != "running" {
		return fmt.Errorf("%w: candidate %s is not running (state %q)", ErrPrecondition, r.Candidate, m.State)
	}
	// Never, forced or not: --force skips the prompt and the lag check.
	if m.Priority <= 0 || m.RefusesFailover() {
		return fmt.Errorf("%w: candidate %s has priority 0 or nofailover: it is never promoted", ErrPrecondition, r.Candidate)
	}
	if !r.Force {
		dyn := a.currentDynamic(c)
		if lag := c.ReceiveLag(*m); lag > uint64(max(dyn.MaximumLagOnFailover, 0)) {
			return fmt.Errorf("%w: candidate %s is %d bytes behind, more than maximum_lag_on_failover (use --force)", ErrPrecondition, r.Candidate, lag)
		}
	} else {
		a.log.Warn("forced failover: lag check skipped", "candidate", r.Candidate)
	}
	old := ""
	kind := "failover"
	if c.Leader != nil {
		old = c.Leader.Name
		kind = "switchover" // the leader hands over cleanly
		if why := replicaIneligible(c, *m, false); why != "" && !r.Force {
			return fmt.Errorf("%w: candidate %s %s", ErrPrecondition, r.Candidate, why)
		}
	}
	f := dcs.Failover{Kind: kind, Leader: old, Candidate: r.Candidate, Force: r.Force, RequestedAt: a.d.Clock.Now(),
		Requested: "failover", Source: SourceOf(ctx)}
	if err := a.putFailover(ctx, c, f); err != nil {
		return err
	}
	return a.awaitLeader(ctx, old, r.Candidate)
}

func (a *Agent) putFailover(ctx context.Context, c *dcs.Cluster, f dcs.Failover) error {
	if c.Failover != nil {
		return fmt.Errorf("%w: a %s is already pending (cancel it with DELETE /switchover)", ErrPrecondition, c.Failover.Kind)
	}
	if err := a.d.DCS.SetFailover(ctx, f, 0); err != nil {
		if errors.Is(err, dcs.ErrKeyModified) {
			return fmt.Errorf("%w: another switchover or failover was requested at the same time", ErrPrecondition)
		}
		return fmt.Errorf("%w: record request: %v", ErrNotCompleted, err)
	}
	a.log.Info("failover request recorded", "action", f.Kind, "leader", f.Leader, "candidate", f.Candidate, "source", f.Source)
	return nil
}

// awaitLeader waits until a member other than old (candidate, when named)
// holds the leader key and reports itself a running primary.
func (a *Agent) awaitLeader(ctx context.Context, old, candidate string) error {
	ctx, cancel := context.WithTimeout(ctx, completionBound)
	defer cancel()
	var last string
	for {
		c, err := a.d.DCS.Cluster(ctx)
		if err == nil {
			if l := c.Leader; l != nil && l.Name != old && (candidate == "" || l.Name == candidate) {
				if m := c.Member(l.Name); m != nil && m.Role == "primary" && m.State == "running" {
					return nil
				}
				last = "new leader " + l.Name + " not yet accepting writes"
			} else if c.Failover == nil && (c.Leader == nil || c.Leader.Name == old) {
				last = "the request was dropped; see the leader's log"
				if c.Leader != nil {
					return fmt.Errorf("%w: %s; %s is still the leader", ErrNotCompleted, last, c.Leader.Name)
				}
			} else {
				last = "waiting for the leader to hand over"
			}
		} else {
			last = err.Error()
		}
		if a.d.Clock.Sleep(ctx, 50*time.Millisecond) != nil {
			return fmt.Errorf("%w: not done within %s: %s", ErrNotCompleted, completionBound, last)
		}
	}
}

// currentDynamic is the dynamic configuration as c has it, else as the
// loop last read it. It takes no loop lock: an operator's request to a
// node busy with a long action (a clone) is answered at once.
func (a *Agent) currentDynamic(c *dcs.Cluster) config.Dynamic {
	if c.Config != nil {
		if dyn, err := config.ParseDynamic(c.Config); err == nil {
			return dyn
		}
	}
	return *a.dynSnap.Load()
}

// Cluster reads the cluster from the DCS.
func (a *Agent) Cluster(ctx context.Context) (*dcs.Cluster, error) {
	c, err := a.d.DCS.Cluster(ctx)
	if err != nil {
		return nil, fmt.Errorf("read cluster: %w", err)
	}
	return c, nil
}

// Config returns the stored dynamic configuration and its revision.
func (a *Agent) Config(ctx context.Context) ([]byte, int64, error) {
	c, err := a.Cluster(ctx)
	if err != nil {
		return nil, 0, err
	}
	return c.Config, c.ConfigRevision, nil
}

// SetConfig replaces the dynamic configuration if it is still at prevRev
// (dcs.ErrKeyModified otherwise); an invalid configuration, or a ttl that
// leaves this node's watchdog.safety_margin no room, is refused
// (ErrBadRequest naming every problem) and nothing is written.
func (a *Agent) SetConfig(ctx context.Context, raw []byte, prevRev int64) error {
	dyn, err := config.ParseDynamic(raw)
	if err == nil {
		err = dyn.CheckMargin(a.s.SafetyMargin)
	}
	if err != nil {
		return fmt.Errorf("%w: %s", ErrBadRequest, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if err := a.d.DCS.SetConfig(ctx, raw, prevRev); err != nil {
		return fmt.Errorf("write dynamic config: %w", err)
	}
	a.log.Info("operator action", "action", "config change", "source", SourceOf(ctx))
	a.Wake()
	return nil
}

// History is the timeline history.
func (a *Agent) History(ctx context.Context) ([]dcs.HistoryEntry, error) {
	c, err := a.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	return c.History, nil
}

// requests are operators' requests of one kind waiting for the loop,
// which answers each on its channel. The caller does not hold the loop.
type requests struct {
	mu      sync.Mutex
	waiting []chan error
}

func (r *requests) pending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waiting) > 0
}

// ask queues a request, wakes the loop and waits for its answer, ctx or
// bound; what names the request in errors.
func (r *requests) ask(ctx context.Context, a *Agent, what string, bound time.Duration) error {
	done := r.add()
	a.Wake()
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case err := <-done:
		if errors.Is(err, ErrPrecondition) {
			return err
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrNotCompleted, what, err)
		}
		return nil
	case <-ctx.Done():
		r.drop(done)
		return fmt.Errorf("%w: %s: %v", ErrNotCompleted, what, ctx.Err())
	case <-t.C:
		r.drop(done)
		return fmt.Errorf("%w: %s: not possible within %s: %s", ErrNotCompleted, what, bound, a.Status().Reason)
	}
}

// add queues a request; its answer comes on the channel.
func (r *requests) add() chan error {
	done := make(chan error, 1)
	r.mu.Lock()
	r.waiting = append(r.waiting, done)
	r.mu.Unlock()
	return done
}

func (r *requests) drop(done chan error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, c := range r.waiting {
		if c == done {
			r.waiting = append(r.waiting[:i], r.waiting[i+1:]...)
			return
		}
	}
}

// finish answers every waiting request with err.
func (r *requests) finish(err error) {
	r.mu.Lock()
	reqs := r.waiting
	r.waiting = nil
	r.mu.Unlock()
	for _, c := range reqs {
		c <- err
	}
}

// Restart asks the loop to restart the local PostgreSQL in its current
// role and waits for it: the loop runs it when the node is steady (a leader
// with a safe lease, a standby that answers), with the lease renewed and
// the watchdog armed meanwhile.
func (a *Agent) Restart(ctx context.Context) error {
	a.log.Info("operator action", "action", "restart", "source", SourceOf(ctx))
	return a.restarts.ask(ctx, a, "restart postgres", max(2*a.Status().TTL, completionBound))
}

// Reload makes PostgreSQL re-read its configuration.
func (a *Agent) Reload(ctx context.Context) error {
	a.log.Info("operator action", "action", "reload", "source", SourceOf(ctx))
	if err := a.d.Postgres.Reload(ctx); err != nil {
		return fmt.Errorf("%w: reload postgres: %v", ErrNotCompleted, err)
	}
	return nil
}

// Reinitialize asks the loop to rebuild this replica from the leader
// (stop, wipe, clone) and waits for it; refused on the leader, or with no
// running leader (ErrPrecondition). The loop decides it like any action
// (decideReinit): a node that must first be made safe is.
func (a *Agent) Reinitialize(ctx context.Context) error {
	if d := a.longAction.Load(); d != nil {
		return fmt.Errorf("%w: the agent is busy (%s): try again when it is done", ErrNotCompleted, d)
	}
	a.log.Info("operator action", "action", "reinitialize", "source", SourceOf(ctx))
	// The clone of a big database takes its time: the bound is the
	// caller's (and the REST server's) more than this one.
	return a.reinits.ask(ctx, a, "reinitialize", max(10*a.Status().TTL, 5*time.Minute))
}

// freshCluster reads the cluster as etcd has it now, for an operator's
// request: a member's view may not have another member's last record yet
// (a candidate that just started streaming).
func (a *Agent) freshCluster(ctx context.Context) (*dcs.Cluster, error) {
	return dcs.Fresh(ctx, a.d.DCS)
}
