package backup

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/dcs"
)

// scheduleKinds are the kinds a schedule may name, in the order a tick
// runs those due at once: base backups first, so a dump or drill that is
// due with them sees the newest one.
var scheduleKinds = []string{"full", "diff", "incr", "logical", "drill"}

// Cron is a parsed schedule (config.Cron): the first due time strictly
// after t, in t's location; zero when there is none.
type Cron interface {
	Next(t time.Time) time.Time
}

// Clock is the scheduler's time: tests move it.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// slotStore is where the schedule's progress lives (the durable key
// backup/schedule), shared by every leader the cluster has.
type slotStore interface {
	Cluster(ctx context.Context) (*dcs.Cluster, error)
	UpdateBackupSlot(ctx context.Context, kind string, prev *dcs.BackupSlot, next dcs.BackupSlot) error
}

// jobs runs one scheduled job to its end. ErrRunning (another job holds
// the backup lock) and an ended ctx (leadership lost) leave the slot owed;
// any other error is the job's failure, recorded as its outcome.
type jobs interface {
	RunJob(ctx context.Context, kind string, slot time.Time) error
}

// scheduler runs the configured schedules on the leader. Each kind's
// progress is a slot in the DCS, claimed with a compare-and-swap before its
// job starts and marked done when it ends, so a leader change neither runs
// a slot twice nor skips it: a slot whose run was stopped is owed, and the
// next leader runs it. Slots missed while there was no leader collapse into
// one run, of the newest of them.
type scheduler struct {
	Member    string
	Schedules map[string]Cron
	// Location is the time zone schedules are read in.
	Location *time.Location
	Clock    Clock
	Store    slotStore
	Jobs     jobs
	Log      hclog.Logger
	// RetryEvery is how soon an owed slot is tried again after the job
	// could not start (another held the lock, the DCS was unreachable).
	RetryEvery time.Duration
	// Reload brings new schedules (SIGHUP); they replace Schedules between
	// ticks, so a running job is never cut by them.
	Reload <-chan map[string]Cron
}

// maxSlotsWalked bounds the walk over missed slots (a minute schedule over
// two years of outage).
const maxSlotsWalked = 1 << 20

// run ticks until ctx ends (leadership lost).
func (s *scheduler) run(ctx context.Context) {
	for {
		now := s.Clock.Now()
		wake := s.tick(ctx, now)
		d := wake.Sub(now)
		if wake.IsZero() || d > time.Hour {
			d = time.Hour // schedules without a next slot, and a clock that jumps
		}
		select {
		case <-ctx.Done():
			return
		case sc := <-s.Reload:
			s.Schedules = sc
		case <-s.Clock.After(max(d, time.Second)):
		}
	}
}

// tick runs every job that is due at now (in scheduleKinds order, one
// after the other: each ends before the next starts) and returns when the
// next one is due.
func (s *scheduler) tick(ctx context.Context, now time.Time) time.Time {
	c, err := s.Store.Cluster(ctx)
	if err != nil {
		s.Log.Warn("cannot read the schedule's progress: retrying", "error", err)
		return now.Add(s.retry())
	}
	var wake time.Time
	soonest := func(t time.Time) {
		if !t.IsZero() && (wake.IsZero() || t.Before(wake)) {
			wake = t
		}
	}
	for _, kind := range scheduleKinds {
		cr, ok := s.Schedules[kind]
		if !ok || ctx.Err() != nil {
			continue
		}
		if kind != scheduleKinds[0] {
			now = s.Clock.Now() // the jobs before took time
		}
		st := c.BackupRuns[kind].Schedule
		if w, ok := s.step(ctx, kind, cr, st, now); ok {
			soonest(w)
			continue
		}
		// The state changed under the step: read it again next time.
		soonest(now.Add(s.retry()))
	}
	return wake
}

// due is what a kind's schedule owes at now, given its stored state:
// the slot to run (zero: none) and, when none, when the next one is due.
// A first sight of a schedule owes nothing: it starts from now, so a new
// schedule does not run at once for a slot in the past.
func due(cr Cron, st *dcs.BackupSlot, now time.Time) (slot, next time.Time) {
	if st == nil {
		return time.Time{}, cr.Next(now)
	}
	// The newest slot at or before now, past the stored one.
	latest := time.Time{}
	for t, n := cr.Next(st.Slot.In(now.Location())), 0; !t.IsZero() && !t.After(now) && n < maxSlotsWalked; t, n = cr.Next(t), n+1 {
		latest = t
	}
	switch {
	case !latest.IsZero():
		return latest, time.Time{}
	case !st.Done:
		return st.Slot, time.Time{}
	}
	return time.Time{}, cr.Next(st.Slot.In(now.Location()))
}

// step does what one kind owes. ok is false when the stored state moved
// under it (another leader claimed the slot).
func (s *scheduler) step(ctx context.Context, kind string, cr Cron, st *dcs.BackupSlot, now time.Time) (wake time.Time, ok bool) {
	now = now.In(s.location())
	if st == nil {
		// Start the schedule from now: a baseline, done, never run.
		base := dcs.BackupSlot{Slot: now, Done: true, Member: s.Member, OK: true}
		if err := s.Store.UpdateBackupSlot(ctx, kind, nil, base); err != nil {
			return time.Time{}, !errors.Is(err, dcs.ErrKeyModified)
		}
		s.Log.Info("schedule started", "kind", kind, "next", cr.Next(now).Format(time.RFC3339))
		return cr.Next(now), true
	}
	slot, next := due(cr, st, now)
	if slot.IsZero() {
		return next, true
	}
	claim := dcs.BackupSlot{Slot: slot, Member: s.Member}
	if !st.Same(&claim) {
		if err := s.Store.UpdateBackupSlot(ctx, kind, st, claim); err != nil {
			if !errors.Is(err, dcs.ErrKeyModified) {
				s.Log.Warn("cannot claim a scheduled slot: retrying", "kind", kind, "slot", slot.Format(time.RFC3339), "error", err)
				return now.Add(s.retry()), true
			}
			return time.Time{}, false
		}
		if skipped := st.Slot; !st.Done && !skipped.Equal(slot) {
			s.Log.Info("an owed slot is superseded by a newer one", "kind", kind, "owed", skipped.Format(time.RFC3339), "slot", slot.Format(time.RFC3339))
		}
	}
	s.Log.Info("scheduled job starting", "kind", kind, "slot", slot.Format(time.RFC3339), "late", now.Sub(slot).Round(time.Second))
	err := s.Jobs.RunJob(ctx, kind, slot)
	switch {
	case errors.Is(err, ErrRunning):
		s.Log.Info("scheduled job waits: another backup job runs", "kind", kind, "error", err)
		return now.Add(s.retry()), true
	case ctx.Err() != nil || errors.Is(err, errNotLeading):
		s.Log.Warn("scheduled job stopped: the slot is owed to the next leader", "kind", kind, "slot", slot.Format(time.RFC3339))
		return time.Time{}, true
	}
	done := claim
	done.Done, done.OK = true, err == nil
	if err != nil {
		done.Error = err.Error()
	}
	// The outcome is written even if leadership went meanwhile: the job ran.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if uerr := s.Store.UpdateBackupSlot(wctx, kind, &claim, done); uerr != nil {
		s.Log.Warn("cannot record the scheduled slot as done: it may run again", "kind", kind, "error", uerr)
		return now.Add(s.retry()), true
	}
	if err != nil {
		s.Log.Error("scheduled job failed", "kind", kind, "slot", slot.Format(time.RFC3339), "error", err)
	}
	return cr.Next(slot), true
}

func (s *scheduler) retry() time.Duration {
	if s.RetryEvery > 0 {
		return s.RetryEvery
	}
	return 30 * time.Second
}

func (s *scheduler) location() *time.Location {
	if s.Location == nil {
		return time.Local
	}
	return s.Location
}
