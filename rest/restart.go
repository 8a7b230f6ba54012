package rest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/agent"
)

// restartBody is POST /restart's optional body, with Patroni's keys.
type restartBody struct {
	// Schedule is when to restart (RFC 3339); empty: now.
	Schedule string `json:"schedule"`
	// RestartPending: only if a changed parameter waits for a restart.
	RestartPending bool `json:"restart_pending"`
}

// parseRestart reads an optional /restart body; now is for the schedule's
// check.
func parseRestart(body []byte, now time.Time) (at time.Time, pendingOnly bool, err error) {
	var b restartBody
	if len(body) == 0 {
		return time.Time{}, false, nil
	}
	if err := decodeBytes(body, &b); err != nil {
		return time.Time{}, false, err
	}
	if b.Schedule != "" {
		at, err = time.Parse(time.RFC3339, b.Schedule)
		if err != nil {
			return time.Time{}, false, fmt.Errorf("%w: schedule %q: want RFC 3339 with a zone, like 2026-11-23T03:00:00Z", errBadRequest, b.Schedule)
		}
		if now.Sub(at) > time.Minute {
			return time.Time{}, false, fmt.Errorf("%w: schedule %s is in the past", errBadRequest, b.Schedule)
		}
		if !at.After(now) {
			at = time.Time{}
		}
	}
	return at, b.RestartPending, nil
}

var errNoPendingRestart = fmt.Errorf("%w: no parameter waits for a restart (restart_pending)", agent.ErrPrecondition)

func (s *Server) postRestart(r *http.Request) (result, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return result{}, fmt.Errorf("%w: body larger than %d bytes", errTooLarge, maxBody)
	}
	at, pendingOnly, err := parseRestart(body, time.Now())
	if err != nil {
		return result{}, err
	}
	if !at.IsZero() {
		if err := s.restarts.set(at, pendingOnly, agent.SourceOf(r.Context())); err != nil {
			return result{}, err
		}
		s.encoded.Store(nil)
		return result{http.StatusAccepted, map[string]string{"message": "restart scheduled for " + at.Format(time.RFC3339)}}, nil
	}
	if pendingOnly && !s.o.Agent.Status().PendingRestart {
		return result{}, errNoPendingRestart
	}
	if err := s.o.Agent.Restart(r.Context()); err != nil {
		return result{}, err
	}
	return result{body: map[string]string{"message": "restart done"}}, nil
}

func (s *Server) deleteRestart(r *http.Request) (result, error) {
	if !s.restarts.cancel() {
		return result{}, codedError{http.StatusNotFound, errors.New("no restart is scheduled")}
	}
	s.encoded.Store(nil)
	s.log.Info("operator action", "action", "cancel scheduled restart", "source", agent.SourceOf(r.Context()))
	return result{body: map[string]string{"message": "scheduled restart cancelled"}}, nil
}

// restartSchedule holds at most one scheduled restart of this node's
// PostgreSQL. It lives in the agent process, as Patroni's does: a restart
// scheduled on a member that restarts is gone with it.
type restartSchedule struct {
	a   Agent
	log hclog.Logger

	mu          sync.Mutex
	at          time.Time
	pendingOnly bool
	timer       *time.Timer
}

func newRestartSchedule(a Agent, log hclog.Logger) *restartSchedule {
	return &restartSchedule{a: a, log: log}
}

var errRestartScheduled = codedError{http.StatusConflict, errors.New("a restart is already scheduled (cancel it with DELETE /restart)")}

func (rs *restartSchedule) set(at time.Time, pendingOnly bool, source string) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.timer != nil {
		return errRestartScheduled
	}
	rs.at, rs.pendingOnly = at, pendingOnly
	rs.timer = time.AfterFunc(time.Until(at), func() { rs.fire(source) })
	rs.log.Info("operator action", "action", "schedule restart", "at", at.Format(time.RFC3339), "restart_pending", pendingOnly, "source", source)
	return nil
}

// fire runs the scheduled restart; the request that scheduled it is long
// gone, so its outcome goes to the log.
func (rs *restartSchedule) fire(source string) {
	rs.mu.Lock()
	pendingOnly := rs.pendingOnly
	rs.timer, rs.at = nil, time.Time{}
	rs.mu.Unlock()
	if pendingOnly && !rs.a.Status().PendingRestart {
		rs.log.Info("scheduled restart skipped: no parameter waits for a restart")
		return
	}
	ctx, cancel := context.WithTimeout(agent.WithSource(context.Background(), "scheduled by "+source), 2*time.Minute)
	defer cancel()
	if err := rs.a.Restart(ctx); err != nil {
		rs.log.Error("scheduled restart failed", "error", err)
	}
}

func (rs *restartSchedule) cancel() bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.timer == nil {
		return false
	}
	rs.timer.Stop()
	rs.timer, rs.at = nil, time.Time{}
	return true
}

func (rs *restartSchedule) scheduled() (time.Time, bool, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.at, rs.pendingOnly, rs.timer != nil
}
