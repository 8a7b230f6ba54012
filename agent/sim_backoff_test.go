package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// Scenarios (found in review) against the back-off (backoff.go) and helpers that
// inject failures into one agent's PostgreSQL and etcd client.

// hookPG is a node's fake PostgreSQL with failures injected.
type hookPG struct {
	*fakePG
	// startErr, when it returns an error, is what Start returns after the
	// server was started anyway (pg_ctl -w timing out on a slow start).
	startErr func() error
	// promoteErr makes Promote fail before asking the server.
	promoteErr func() error
}

func (h *hookPG) Start(ctx context.Context, up *Upstream) error {
	err := h.fakePG.Start(ctx, up)
	if err == nil && h.startErr != nil {
		err = h.startErr()
	}
	return err
}

func (h *hookPG) Promote(ctx context.Context) error {
	if h.promoteErr != nil {
		if err := h.promoteErr(); err != nil {
			return err
		}
	}
	return h.fakePG.Promote(ctx)
}

// hookDCS is a node's etcd client with failures injected.
type hookDCS struct {
	simDCS
	appendHistoryErr func() error
	setSyncErr       func() error
}

func (h hookDCS) AppendHistory(ctx context.Context, e dcs.HistoryEntry) error {
	if h.appendHistoryErr != nil {
		if err := h.appendHistoryErr(); err != nil {
			_ = h.n.w.s.sleep(ctx, 5*time.Millisecond)
			return err
		}
	}
	return h.simDCS.AppendHistory(ctx, e)
}

func (h hookDCS) SetSync(ctx context.Context, s dcs.Sync, prev int64) error {
	if h.setSyncErr != nil {
		if err := h.setSyncErr(); err != nil {
			_ = h.n.w.s.sleep(ctx, 5*time.Millisecond)
			return err
		}
	}
	return h.simDCS.SetSync(ctx, s, prev)
}

// startHooked is w.start with n's PostgreSQL and etcd client hooked.
func (w *world) startHooked(n *simNode, delay time.Duration, pg *hookPG, hd *hookDCS) {
	var wrapPG func(Postgres) Postgres
	if pg != nil {
		wrapPG = func(Postgres) Postgres { pg.fakePG = n.pg; return pg }
	}
	var wrapDCS func(DCS) DCS
	if hd != nil {
		wrapDCS = func(d DCS) DCS { hd.simDCS = d.(simDCS); return *hd }
	}
	w.startWith(n, delay, wrapPG, wrapDCS)
}

// restartHooked kills n's agent and starts a hooked one at once.
func (w *world) restartHooked(n *simNode, pg *hookPG, hd *hookDCS) {
	w.killAgent(n)
	w.startHooked(n, 0, pg, hd)
}

// once returns an error the first time only.
func once(err error) func() error {
	done := false
	return func() error {
		if done {
			return nil
		}
		done = true
		return err
	}
}

// TestSimStaleErrorAfterSelfResolvedFailure: a replica's start reports
// a failure (pg_ctl -w timing out) although the server came up; from then
// on it streams and its loop only waits. A wait never clears the failure
// (record), so the healthy replica shows "error" in its member record
// (list, /cluster) and last_error in /patroni indefinitely.
func TestSimStaleErrorAfterSelfResolvedFailure(t *testing.T) {
	w := healthy(t, simOpts{ttl: 10 * time.Second})
	l := w.leaderNode()
	r := w.others(l)[0]
	// The replica's agent is restarted with the hook (a restart of a
	// replica's agent stops nothing in the sim's kill -9: its watchdog is
	// disarmed on a standby).
	w.restartHooked(r, &hookPG{startErr: once(errors.New("pg_ctl: server did not start in time"))}, nil)
	w.runFor(3 * time.Second)
	r.pg.die("postmaster killed", false)
	if !w.until(20*time.Second, func() bool { return r.pg.streaming() }) {
		w.fatal(t, "the replica did not come back")
	}
	w.runFor(10 * time.Minute)
	w.noViolation(t)
	st := r.agent.Status()
	c, err := w.mem.Client("operator", time.Second).Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rec := c.Member(r.name)
	if st.Failing != "" || (rec != nil && rec.Error != "") {
		w.fatal(t, "a replica streaming for 10 min still shows a failure: status failing %q last_error %q failures %d since %s; member record error %q",
			st.Failing, st.LastError, st.Failures, st.FailingSince.Format(time.RFC3339), rec.Error)
	}
}

// TestSimPromotionBacksOffAfterCauseCleared: the leader's host is lost
// and every replica's promotion fails for 25 s (its pending history entry
// cannot be written: an etcd hiccup for that key, say). Once writes work
// again a replica should be promoted within a loop or two; the back-off
// (doubling to the ttl, 15 s here) keeps the cluster without a primary for
// up to a ttl more.
func TestSimPromotionBacksOffAfterCauseCleared(t *testing.T) {
	w := healthy(t, simOpts{ttl: 15 * time.Second})
	l := w.leaderNode()
	var until time.Time
	failing := func() error {
		if w.s.now.Before(until) {
			return errors.New("append history: etcdserver: request timed out")
		}
		return nil
	}
	for _, r := range w.others(l) {
		w.restartHooked(r, nil, &hookDCS{appendHistoryErr: failing})
	}
	if !w.until(30*time.Second, w.settled) {
		w.fatal(t, "did not settle")
	}
	w.hostLoss(l)
	until = w.s.now.Add(25 * time.Second)
	if !w.until(60*time.Second, func() bool { n := w.leaderNode(); return n != nil && n != l }) {
		w.fatal(t, "no failover")
	}
	late := w.s.now.Sub(until)
	w.noViolation(t)
	if late > 3*time.Second {
		w.fatal(t, "a replica was promoted %s after its promotion could succeed again (ttl 15 s)", late.Round(100*time.Millisecond))
	}
	t.Logf("promoted %s after the cause cleared", late.Round(100*time.Millisecond))
}
