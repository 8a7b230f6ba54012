package backup

import (
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/internal/testlog"
)

// Each scheduled kind is next due at the first slot after its last
// success, wherever that success is known from (the repository, the
// dumps, the run record); a kind never run is due from the agent's start;
// a kind without a schedule has no due time.
func TestMetricsNextDue(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(ManagerConfig{Member: "node1", Engine: newFakeEngine(), Location: loc, Schedules: map[string]Cron{
		"full":    mustCron(t, "0 1 * * 0"),   // Sundays 01:00, Paris
		"diff":    mustCron(t, "0 1 * * 1-6"), // other days
		"logical": mustCron(t, "0 2 * * *"),
		"drill":   mustCron(t, "0 4 * * 6"),
	}}, testlog.New(t))
	m.started = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC) // a Monday
	fullEnd := time.Date(2026, 11, 29, 0, 40, 0, 0, time.UTC)  // Sunday 01:40 in Paris
	m.repo = &Repository{Info: Info{Backups: []BackupSet{{Label: "20261129-000000F", Type: "full", Start: fullEnd.Add(-40 * time.Minute), Stop: fullEnd}}}}
	m.dumps = []Manifest{{Stamp: "20261130T010000Z", Finished: time.Date(2026, 11, 30, 1, 5, 0, 0, time.UTC)}}
	// The last drill failed; the one before passed on Saturday.
	m.runs = map[string]dcs.BackupRun{"drill": {ID: "node1-9", OK: false, LastSuccess: time.Date(2026, 11, 28, 3, 20, 0, 0, time.UTC)}}
	got := m.Metrics().NextDue
	want := map[string]time.Time{
		"full": time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC), // next Sunday 01:00 Paris
		// No diff has succeeded: the first slot after the start (Monday
		// 13:00 Paris) is Tuesday 01:00 Paris.
		"diff":    time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		"logical": time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC), // 02:00 Paris the day after the dump
		"drill":   time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC), // next Saturday 04:00 Paris: a failed drill does not move it
	}
	if len(got) != len(want) {
		t.Fatalf("next due %v; want %v", got, want)
	}
	for k, w := range want {
		if !got[k].Equal(w) {
			t.Errorf("%s next due %s; want %s", k, got[k].UTC(), w)
		}
	}
	// A manual diff counts: the run record moves it.
	m.runs["diff"] = dcs.BackupRun{ID: "node1-10", OK: true, LastSuccess: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}
	if d := m.Metrics().NextDue["diff"]; !d.Equal(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("diff due after a manual one on Tuesday: %s", d.UTC())
	}
	if d := NewManager(ManagerConfig{Engine: newFakeEngine()}, testlog.New(t)).Metrics().NextDue; len(d) != 0 {
		t.Fatalf("no schedules, next due %v", d)
	}
}
