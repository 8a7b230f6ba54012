package backup

import (
	"errors"
	"fmt"
	"time"

	"github.com/pgwarden/pgwarden/wal"
)

// Target is where a restore recovers to: a time, a WAL position, or (both
// zero) the end of the archived WAL.
type Target struct {
	Time   time.Time
	LSN    wal.LSN
	HasLSN bool
}

// errOutOfReach: the repository cannot recover to the target.
var errOutOfReach = errors.New("out of the repository's reach")

// RestorePlan is the backup to restore for a target and how far its WAL goes.
type RestorePlan struct {
	Target    Target
	Backup    BackupSet
	Reachable Point
}

// Plan picks the newest backup that ended at or before the target, and
// checks that the archive reaches the target from it, before anything is
// written: a target before the oldest backup's end or after the newest
// archived WAL is refused (errOutOfReach).
func (r Repository) Plan(t Target) (RestorePlan, error) {
	if len(r.Info.Backups) == 0 {
		return RestorePlan{}, fmt.Errorf("%w: no backup in the repository of stanza %s", errOutOfReach, r.Info.Stanza)
	}
	oldest := r.Info.Backups[0]
	var chosen *BackupSet
	for i := range r.Info.Backups {
		b := r.Info.Backups[i]
		switch {
		case t.HasLSN && b.LSNStop > t.LSN:
		case !t.Time.IsZero() && b.Stop.After(t.Time):
		default:
			chosen = &r.Info.Backups[i]
		}
	}
	if chosen == nil {
		if t.HasLSN {
			return RestorePlan{}, fmt.Errorf("%w: target LSN %s is before the end of the oldest backup %s (%s)", errOutOfReach, t.LSN, oldest.Label, oldest.LSNStop)
		}
		return RestorePlan{}, fmt.Errorf("%w: target time %s is before the end of the oldest backup %s (%s)", errOutOfReach,
			t.Time.UTC().Format(time.RFC3339Nano), oldest.Label, oldest.Stop.Format(time.RFC3339))
	}
	p, err := r.restorableTo(*chosen)
	if err != nil {
		return RestorePlan{}, fmt.Errorf("%w: %v", errOutOfReach, err)
	}
	end, _ := wal.ParseLSN(p.LSN)
	switch {
	case t.HasLSN && t.LSN > end:
		return RestorePlan{}, fmt.Errorf("%w: target LSN %s is after the newest archived WAL (%s, the end of %s)%s", errOutOfReach, t.LSN, p.LSN, p.Segment, gapNote(p))
	case !t.Time.IsZero() && t.Time.After(p.ArchivedAt):
		return RestorePlan{}, fmt.Errorf("%w: target time %s is after the newest archived WAL (%s, archived %s)%s", errOutOfReach,
			t.Time.UTC().Format(time.RFC3339Nano), p.Segment, p.ArchivedAt.Format(time.RFC3339), gapNote(p))
	}
	return RestorePlan{Target: t, Backup: *chosen, Reachable: p}, nil
}

func gapNote(p Point) string {
	if p.Missing == "" {
		return ""
	}
	return "; the archive lacks " + p.Missing
}

// Describe says what the plan recovers to.
func (p RestorePlan) Describe() string {
	switch {
	case p.Target.HasLSN:
		return "LSN " + p.Target.LSN.String()
	case !p.Target.Time.IsZero():
		return "time " + p.Target.Time.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("the end of the archived WAL (%s on timeline %d)", p.Reachable.LSN, p.Reachable.Timeline)
}

// Request is the pgBackRest restore of the plan from stanza into dataDir;
// action is what PostgreSQL does at a time or LSN target (pause, promote,
// shutdown).
func (p RestorePlan) Request(stanza, dataDir, action string) RestoreRequest {
	r := RestoreRequest{Stanza: stanza, DataDir: dataDir, Set: p.Backup.Label, Type: "default"}
	switch {
	case p.Target.HasLSN:
		r.Type, r.Target, r.TargetAction = "lsn", p.Target.LSN.String(), action
	case !p.Target.Time.IsZero():
		r.Type, r.Target, r.TargetAction = "time", p.Target.Time.UTC().Format("2006-01-02 15:04:05.999999-07"), action
	}
	return r
}
