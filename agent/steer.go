package agent

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// poolerBound bounds each call to PgBouncer (repoint, resume, fence): a
// frozen or unreachable PgBouncer must not hold the HA loop. A fence tells
// it only after PostgreSQL is stopped.
const poolerBound = 3 * time.Second

// pauseBound bounds a PAUSE, which waits for in-flight transactions (the
// pooler gives up on each database after its own pause_timeout).
const pauseBound = 15 * time.Second

// unknownLeader is what the pooler is taken to point at after a fence or a
// handover: anything, so the next leader seen is repointed to.
const unknownLeader = "-"

// steering is the local pooler and what the agent last told it. Two
// goroutines use it: the loop, and during a long action (rewind, clone,
// start) the helper that keeps clients on the leader while the loop is
// blocked; its mutex makes each pooler step whole for either.
type steering struct {
	p     Pooler // nil: no pooler, every method does nothing
	clock Clock
	log   hclog.Logger
	self  string // this node's PostgreSQL address

	mu       sync.Mutex
	leader   string // where the primary entries point
	paused   bool
	pausedAt time.Time
}

// follow keeps the pooler's primary entries on the leader the observation
// shows (planPooler decides), pausing for a switchover and resuming after.
func (s *steering) follow(ctx context.Context, o Observation, out Outcome, self string) {
	if s.p == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	plan := planPooler(o, out, self, s.self, s.leader, s.paused)
	if plan.Pause {
		s.pauseLocked(ctx)
	}
	if plan.Repoint {
		pctx, cancel := context.WithTimeout(ctx, poolerBound)
		err := s.p.SetLeader(pctx, plan.Target)
		cancel()
		if err != nil {
			s.log.Warn("cannot repoint pooler", "leader", plan.Target, "error", err)
		} else {
			s.leader = plan.Target
		}
	}
	s.resumeLocked(ctx, plan.Pending, plan.Target != "" && s.leader == plan.Target)
}

// pause holds new transactions for a switchover; clients count as paused
// even when PgBouncer refused, so the resume is not forgotten.
func (s *steering) pause(ctx context.Context) {
	if s.p == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pauseLocked(ctx)
}

func (s *steering) pauseLocked(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, pauseBound)
	defer cancel()
	if err := s.p.Pause(pctx); err != nil {
		s.log.Warn("switchover: cannot pause pooler", "error", err)
	}
	s.paused, s.pausedAt = true, s.clock.Now()
}

// resumeLocked resumes paused clients once the switchover is over and the
// pooler points at a leader that accepts writes, or after a bound whatever
// happened (a paused database must never be left behind).
func (s *steering) resumeLocked(ctx context.Context, pending, ready bool) {
	if !s.paused {
		return
	}
	stuck := s.clock.Now().Sub(s.pausedAt) > 2*completionBound
	if !stuck && (pending || !ready) {
		return
	}
	if stuck {
		s.log.Warn("pooler paused too long: resuming")
	}
	s.resumeNowLocked(ctx)
}

// resumeNow resumes paused clients at once (a switchover that failed).
func (s *steering) resumeNow(ctx context.Context) {
	if s.p == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused {
		s.resumeNowLocked(ctx)
	}
}

func (s *steering) resumeNowLocked(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, poolerBound)
	defer cancel()
	if err := s.p.Resume(pctx); err != nil {
		s.log.Warn("cannot resume pooler", "error", err)
		return
	}
	s.paused = false
}

// fence stops the pooler sending writes to this node and drops its
// connections to it (session-pooled clients included); new clients wait
// for the next leader.
func (s *steering) fence(ctx context.Context) {
	if s.p == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leader != s.self {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, poolerBound)
	defer cancel()
	if err := s.p.Fence(pctx); err != nil {
		s.log.Warn("cannot fence pooler", "error", err)
	}
	s.leader = unknownLeader // repoint on the next leader seen, whatever happened
	s.paused, s.pausedAt = true, s.clock.Now()
}

// forget makes the next leader seen a repoint, whatever the pooler points
// at now (this node just handed the key over).
func (s *steering) forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leader = unknownLeader
}

// isPaused says whether clients are held, for the published status.
func (s *steering) isPaused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paused
}
