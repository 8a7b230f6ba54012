package rest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgwarden/pgwarden/backup"
	"github.com/pgwarden/pgwarden/dcs"
)

// Backups is what the API needs of this node's backups (*backup.Manager);
// nil when no backup is configured.
type Backups interface {
	View(ctx context.Context) (backup.View, error)
	Start(ctx context.Context, kind string) (dcs.BackupLock, error)
	DrillHere(ctx context.Context, lockID string) (backup.DrillResult, error)
	Metrics() backup.Metrics
}

// codedError carries its own HTTP status.
type codedError struct {
	code int
	err  error
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }

var errNoBackup = codedError{http.StatusServiceUnavailable, errors.New("no backup configured on this member: add a backup section (repository or s3) to its configuration")}

func (s *Server) getBackups(r *http.Request) (result, error) {
	if s.o.Backup == nil {
		return result{}, errNoBackup
	}
	v, err := s.o.Backup.View(r.Context())
	if err != nil {
		return result{}, err
	}
	return result{body: v}, nil
}

type backupBody struct {
	Type string `json:"type"`
}

// toLeader answers 307 with the leader's URL on a member that does not
// lead (curl -L follows it; the CLI asks the leader in the first place).
func (s *Server) toLeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := s.o.Agent.Status()
		if s.o.Backup == nil || st.IsLeader {
			next.ServeHTTP(w, r)
			return
		}
		if c := st.DCSClusterView; c != nil && c.Leader != nil {
			if m := c.Member(c.Leader.Name); m != nil && m.APIURL != "" {
				url := strings.TrimRight(m.APIURL, "/") + "/backup"
				w.Header().Set("Location", url)
				writeJSON(w, http.StatusTemporaryRedirect, map[string]string{"message": "backups run on the leader, " + c.Leader.Name, "location": url})
				return
			}
		}
		writeJSON(w, http.StatusServiceUnavailable, errBody{Error: "this member does not lead and no leader is known"})
	})
}

// postBackup starts a base backup on this member, the leader.
func (s *Server) postBackup(r *http.Request) (result, error) {
	if s.o.Backup == nil {
		return result{}, errNoBackup
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return result{}, fmt.Errorf("%w: body larger than %d bytes", errTooLarge, maxBody)
	}
	b := backupBody{Type: "full"}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := decodeBytes(body, &b); err != nil {
			return result{}, err
		}
	}
	l, err := s.o.Backup.Start(r.Context(), b.Type)
	switch {
	case errors.Is(err, backup.ErrBadKind):
		return result{}, fmt.Errorf("%w: %v", errBadRequest, err)
	case errors.Is(err, backup.ErrRunning):
		return result{}, codedError{http.StatusConflict, err}
	case err != nil:
		return result{}, codedError{http.StatusServiceUnavailable, err}
	}
	return result{code: http.StatusAccepted, body: map[string]any{
		"message": fmt.Sprintf("%s backup started on %s", l.Type, l.Member),
		"id":      l.ID, "type": l.Type, "member": l.Member, "started": l.Started.Format(time.RFC3339Nano),
	}}, nil
}

// drillBody is POST /drill: the leader asks this member to run a drill
// under the backup lock it holds (ID).
type drillBody struct {
	ID string `json:"id"`
}

// drillAnswer is POST /drill's 200: the drill ran, and passed unless
// Error is set.
type drillAnswer struct {
	Result backup.DrillResult `json:"result"`
	Error  string             `json:"error,omitempty"`
}

// postDrill runs a restore drill on this member's host, for as long as
// the leader's request lasts.
func (s *Server) postDrill(r *http.Request) (result, error) {
	if s.o.Backup == nil {
		return result{}, errNoBackup
	}
	var b drillBody
	if err := decode(r, &b); err != nil {
		return result{}, err
	}
	if strings.TrimSpace(b.ID) == "" {
		return result{}, fmt.Errorf("%w: id: required (the backup lock the drill runs under)", errBadRequest)
	}
	res, err := s.o.Backup.DrillHere(r.Context(), b.ID)
	var failed backup.DrillFailed
	switch {
	case errors.As(err, &failed):
		return result{body: drillAnswer{Result: res, Error: err.Error()}}, nil
	case errors.Is(err, backup.ErrNotLocked):
		return result{}, codedError{http.StatusPreconditionFailed, err}
	case errors.Is(err, backup.ErrDrilling):
		return result{}, codedError{http.StatusConflict, err}
	case err != nil:
		return result{}, codedError{http.StatusServiceUnavailable, err}
	}
	return result{body: drillAnswer{Result: res}}, nil
}

// noWriteDeadline lifts the server's write timeout for a response that
// comes only once a long job ends (a drill restores a whole backup).
func noWriteDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		next.ServeHTTP(w, r)
	})
}

// backupCollector exposes the backups' metrics from memory at scrape time.
type backupCollector struct {
	a Agent
	b Backups

	lastSuccess, duration, archOK, archFail, archFailAt, drillOK, drillFailed, runOK, nextDue *prometheus.Desc
}

func newBackupCollector(a Agent, b Backups) *backupCollector {
	labels := []string{"scope", "name"}
	return &backupCollector{a: a, b: b,
		lastSuccess: prometheus.NewDesc("pgwarden_backup_last_success_timestamp_seconds", "end of the newest complete backup of each type in the repository", append(labels, "type"), nil),
		duration:    prometheus.NewDesc("pgwarden_backup_duration_seconds", "how long the newest complete backup took", labels, nil),
		archOK:      prometheus.NewDesc("pgwarden_wal_archive_last_success_timestamp_seconds", "when this node's PostgreSQL last archived a WAL file", labels, nil),
		archFail:    prometheus.NewDesc("pgwarden_wal_archive_failures_total", "failed archive_command runs of this node's PostgreSQL (pg_stat_archiver)", labels, nil),
		archFailAt: prometheus.NewDesc("pgwarden_wal_archive_last_failure_timestamp_seconds", "when archiving last failed, labelled with the WAL file that failed",
			append(labels, "segment"), nil),
		drillOK:     prometheus.NewDesc("pgwarden_backup_drill_last_success_timestamp_seconds", "when a restore drill of the newest backup last passed", labels, nil),
		runOK:       prometheus.NewDesc("pgwarden_backup_last_run_success", "1 when the last run of each type (full, diff, incr, logical, drill) succeeded", append(labels, "type"), nil),
		drillFailed: prometheus.NewDesc("pgwarden_backup_drill_failed", "1 when the last restore drill failed", labels, nil),
		nextDue: prometheus.NewDesc("pgwarden_backup_schedule_next_due_timestamp_seconds",
			"per scheduled type, the first slot of its schedule after its last success: overdue once the run of that slot should have ended", append(labels, "type"), nil),
	}
}

func (c *backupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lastSuccess, c.duration, c.archOK, c.archFail, c.archFailAt, c.drillOK, c.drillFailed, c.runOK, c.nextDue} {
		ch <- d
	}
}

func (c *backupCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.a.Status()
	m := c.b.Metrics()
	l := []string{st.Scope, st.Name}
	for kind, at := range m.LastSuccess {
		ch <- prometheus.MustNewConstMetric(c.lastSuccess, prometheus.GaugeValue, unix(at), append(l, kind)...)
	}
	for kind, at := range m.NextDue {
		ch <- prometheus.MustNewConstMetric(c.nextDue, prometheus.GaugeValue, unix(at), append(l, kind)...)
	}
	for kind, ok := range m.LastRunOK {
		ch <- prometheus.MustNewConstMetric(c.runOK, prometheus.GaugeValue, b2f(ok), append(l, kind)...)
	}
	if !m.DrillLastSuccess.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.drillOK, prometheus.GaugeValue, unix(m.DrillLastSuccess), l...)
	}
	ch <- prometheus.MustNewConstMetric(c.drillFailed, prometheus.GaugeValue, b2f(m.DrillFailed), l...)
	if m.LastDuration > 0 {
		ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, m.LastDuration.Seconds(), l...)
	}
	if a := m.Archiver; a != nil {
		if !a.LastArchivedTime.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.archOK, prometheus.GaugeValue, unix(a.LastArchivedTime), l...)
		}
		ch <- prometheus.MustNewConstMetric(c.archFail, prometheus.CounterValue, float64(a.FailedCount), l...)
		if a.LastFailedWAL != "" {
			ch <- prometheus.MustNewConstMetric(c.archFailAt, prometheus.GaugeValue, unix(a.LastFailedTime), append(l, a.LastFailedWAL)...)
		}
	}
}
