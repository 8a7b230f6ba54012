package backup

import (
	"context"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
)

// View is GET /backups: the repository's backups as this node last read
// them, the run in progress anywhere in the cluster, the last run of each
// kind, and this node's WAL archiver.
type View struct {
	Stanza     string       `json:"stanza"`
	Repository string       `json:"repository"`
	Backups    []BackupView `json:"backups"`
	// Timelines are the timelines recovery follows to the newest one.
	Timelines []uint32 `json:"timelines"`
	// Dumps are the complete logical dumps, oldest first.
	Dumps []DumpView `json:"dumps"`
	// PITRFrom is the oldest backup that restores to any point in time:
	// WAL is continuous from it on (older kept ones restore to their end).
	PITRFrom string                   `json:"pitr_from,omitempty"`
	Running  *dcs.BackupLock          `json:"running,omitempty"`
	LastRuns map[string]dcs.BackupRun `json:"last_runs,omitempty"`
	Archiver *ArchiverView            `json:"archiver,omitempty"`
	ReadAt   time.Time                `json:"read_at,omitzero"`
	// Error says why the repository could not be read.
	Error string `json:"error,omitempty"`
}

// BackupView is one backup with its timeline, LSNs and how far it can be
// restored.
type BackupView struct {
	BackupSet
	Timeline     uint32 `json:"timeline"`
	LSNStartText string `json:"lsn_start"`
	LSNStopText  string `json:"lsn_stop"`
	RestorableTo *Point `json:"restorable_to,omitempty"`
	Problem      string `json:"problem,omitempty"`
	// Recovery is "point-in-time" (any point from its end to
	// RestorableTo) or "end-only" (the WAL past its consistency point
	// was expired by retention).
	Recovery string `json:"recovery,omitempty"`
	// Keep is why retention keeps it; empty: the next run removes it.
	Keep []string `json:"keep,omitempty"`
}

// DumpView is one logical dump and why retention keeps it.
type DumpView struct {
	Manifest
	Size int64    `json:"size"`
	Keep []string `json:"keep,omitempty"`
}

// ArchiverView is pg_stat_archiver of this node, with the reason of the
// last failure from pgBackRest's (or pgwarden's) archive-push log.
type ArchiverView struct {
	ArchivedCount    int64     `json:"archived_count"`
	LastArchivedWAL  string    `json:"last_archived_wal,omitempty"`
	LastArchivedTime time.Time `json:"last_archived_time,omitzero"`
	FailedCount      int64     `json:"failed_count"`
	LastFailedWAL    string    `json:"last_failed_wal,omitempty"`
	LastFailedTime   time.Time `json:"last_failed_time,omitzero"`
	FailureReason    string    `json:"failure_reason,omitempty"`
}

// describe turns a repository read into the backups' view.
func describe(r Repository) []BackupView {
	out := make([]BackupView, 0, len(r.Info.Backups))
	for _, b := range r.Info.Backups {
		v := BackupView{BackupSet: b, Timeline: b.timeline(), LSNStartText: b.LSNStart.String(), LSNStopText: b.LSNStop.String()}
		p, err := r.restorableTo(b)
		if err != nil {
			v.Problem = err.Error()
		} else {
			v.RestorableTo = &p
		}
		out = append(out, v)
	}
	return out
}

// View answers GET /backups without running pgBackRest: the repository as
// last read (every InfoEvery, and after each backup).
func (m *Manager) View(ctx context.Context) (View, error) {
	o := m.c.Engine.Options()
	v := View{Stanza: o.Stanza, Repository: o.repositoryName(), Backups: []BackupView{}}
	m.mu.Lock()
	repo, repoErr := m.repo, m.repoErr
	v.Archiver = m.archiverView()
	local := m.run
	var progress Progress
	if local != nil {
		progress = local.progress
	}
	m.mu.Unlock()
	if repoErr != nil {
		v.Error = repoErr.Error()
	}
	m.mu.Lock()
	dumps := m.dumps
	m.mu.Unlock()
	v.Dumps = []DumpView{}
	if repo != nil {
		v.Backups = describe(*repo)
		v.Timelines = repo.History.Timelines()
		v.ReadAt = repo.ReadAt
		plan := PlanExpiry(*repo, dumps, m.c.Policy, m.location())
		annotate(&v, plan, dumps)
	}
	if c, err := m.c.Lock.Cluster(ctx); err == nil {
		v.Running, v.LastRuns = c.BackupLock, c.BackupRuns
	} else if local != nil {
		l := local.lock
		v.Running = &l
	}
	// This node's own run: its progress is fresher than the lock's.
	if local != nil && v.Running != nil && v.Running.ID == local.lock.ID {
		v.Running.Percent, v.Running.Bytes = progress.Percent, progress.Bytes
	}
	return v, nil
}

// annotate adds retention's reasons and each backup's kind of recovery.
func annotate(v *View, plan ExpiryPlan, dumps []Manifest) {
	v.PITRFrom = plan.PITRFrom
	pitr := plan.Policy.KeepsAll()
	for i := range v.Backups {
		b := &v.Backups[i]
		for _, d := range plan.Backups {
			if d.ID == b.Label {
				b.Keep = d.Reasons
			}
		}
		pitr = pitr || b.Label == plan.PITRFrom
		b.Recovery = "end-only"
		if pitr {
			b.Recovery = "point-in-time"
		}
	}
	for _, d := range dumps {
		dv := DumpView{Manifest: d, Size: d.Size()}
		for _, dd := range plan.Dumps {
			if dd.ID == d.Stamp {
				dv.Keep = dd.Reasons
			}
		}
		v.Dumps = append(v.Dumps, dv)
	}
}

// Metrics is what GET /metrics shows of backups: read from memory only.
type Metrics struct {
	// LastSuccess is the newest complete backup's end, by type.
	LastSuccess map[string]time.Time
	// LastDuration is how long the newest backup took.
	LastDuration time.Duration
	Archiver     *ArchiverView
	// DrillLastSuccess is when a restore drill last passed (zero: never,
	// as far as the cluster's record goes).
	DrillLastSuccess time.Time
	// DrillFailed: the last drill failed.
	DrillFailed bool
	// LastRunOK is whether the last run of each kind succeeded.
	LastRunOK map[string]bool
	// NextDue is, per scheduled kind, the first slot of its schedule after
	// its last success (after this agent started when none is known): a
	// kind that has not succeeded again some time after it is overdue.
	NextDue map[string]time.Time
}

// Metrics is the repository and the archiver as last read.
func (m *Manager) Metrics() Metrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := Metrics{LastSuccess: map[string]time.Time{}}
	if m.repo != nil {
		for _, b := range m.repo.Info.Backups {
			if b.Stop.After(out.LastSuccess[b.Type]) {
				out.LastSuccess[b.Type] = b.Stop
			}
		}
		if n, ok := m.repo.Info.Newest(); ok {
			out.LastDuration = n.duration()
		}
	}
	if n := len(m.dumps); n > 0 {
		out.LastSuccess["logical"] = m.dumps[n-1].Finished
	}
	out.LastRunOK = map[string]bool{}
	for k, r := range m.runs {
		if r.ID != "" {
			out.LastRunOK[k] = r.OK
		}
	}
	if r, ok := m.runs["drill"]; ok && r.ID != "" {
		out.DrillLastSuccess, out.DrillFailed = r.LastSuccess, !r.OK
	}
	out.NextDue = m.nextDue(out.LastSuccess)
	out.Archiver = m.archiverView()
	return out
}

// nextDue is Metrics' NextDue: lastSuccess is what the repository and the
// dumps hold; a run's record also counts (a drill leaves nothing in the
// repository). m.mu held.
func (m *Manager) nextDue(lastSuccess map[string]time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for kind, cr := range m.c.Schedules {
		last := lastSuccess[kind]
		if r := m.runs[kind]; r.LastSuccess.After(last) {
			last = r.LastSuccess
		}
		if last.IsZero() {
			// None yet: the schedule is owed its first run from when this
			// agent started watching, so a schedule that never runs is
			// seen too.
			last = m.started
		}
		if next := cr.Next(last.In(m.location())); !next.IsZero() {
			out[kind] = next
		}
	}
	return out
}

// archiverView: m.mu held.
func (m *Manager) archiverView() *ArchiverView {
	st := m.archiver
	if st == nil {
		return nil
	}
	v := &ArchiverView{ArchivedCount: st.ArchivedCount, LastArchivedWAL: st.LastArchivedWAL, LastArchivedTime: st.LastArchivedTime,
		FailedCount: st.FailedCount, LastFailedWAL: st.LastFailedWAL, LastFailedTime: st.LastFailedTime}
	if st.FailedCount > 0 {
		v.FailureReason = m.failReason
	}
	return v
}
