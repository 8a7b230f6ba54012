package rest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/backup"
	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/internal/testlog"
)

// fakeBackups is a backup manager as a state.
type fakeBackups struct {
	mu      sync.Mutex
	started []string
	err     error
	// drillErr is what a drill asked for here returns; drills the lock
	// IDs asked for.
	drillErr error
	drills   []string
	// drillTakes is how long a drill lasts.
	drillTakes time.Duration
}

func (f *fakeBackups) DrillHere(ctx context.Context, lockID string) (backup.DrillResult, error) {
	select {
	case <-time.After(f.drillTakes):
	case <-ctx.Done():
		return backup.DrillResult{}, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drills = append(f.drills, lockID)
	return backup.DrillResult{Member: "b", Scratch: "/b/pgwarden-drill-1", Backup: "20260101-000000F", Tables: 3}, f.drillErr
}

func (f *fakeBackups) View(ctx context.Context) (backup.View, error) {
	return backup.View{Stanza: "main", Repository: "/repo", Backups: []backup.BackupView{{BackupSet: backup.BackupSet{Label: "20260101-000000F", Type: "full"}, Timeline: 2}},
		Running: &dcs.BackupLock{Member: "a", Type: "diff", Percent: 12.5}}, nil
}

func (f *fakeBackups) Start(ctx context.Context, kind string) (dcs.BackupLock, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return dcs.BackupLock{}, f.err
	}
	f.started = append(f.started, kind)
	return dcs.BackupLock{Member: "a", ID: "a-1", Type: kind, Started: time.Unix(1, 0)}, nil
}

func (f *fakeBackups) Metrics() backup.Metrics {
	return backup.Metrics{LastSuccess: map[string]time.Time{"full": time.Unix(1700000000, 0)}, LastDuration: 3 * time.Second,
		Archiver: &backup.ArchiverView{FailedCount: 4, LastFailedWAL: "000000020000000000000009", LastFailedTime: time.Unix(1700000100, 0),
			LastArchivedTime: time.Unix(1700000050, 0)},
		NextDue: map[string]time.Time{"diff": time.Unix(1700003600, 0)}}
}

func backupServer(t *testing.T, st withStatus, b Backups, auth *config.Credential) *httptest.Server {
	t.Helper()
	f := &fakeAgent{st: st.Status}
	f.st.DCSClusterView = &dcs.Cluster{Leader: &dcs.Leader{Name: "a"}, Members: []dcs.Member{{Name: "a", APIURL: "http://10.0.0.1:8008"}}}
	s, err := NewServer(Options{Agent: f, Auth: auth, Backup: b}, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

func TestBackupAPI(t *testing.T) {
	leader := withStatus{primaryStatus}
	b := &fakeBackups{}
	ts := backupServer(t, leader, b, nil)
	if code, body := do(t, ts, "POST", "/backup", `{"type":"diff"}`); code != 202 || !strings.Contains(body, `"id": "a-1"`) {
		t.Fatalf("POST /backup on the leader = %d %s", code, body)
	}
	if code, _ := do(t, ts, "POST", "/backup", ``); code != 202 || b.started[1] != "full" {
		t.Fatalf("POST /backup without a body = %d, started %v; want a full backup", code, b.started)
	}
	if code, body := do(t, ts, "POST", "/backup", `{"kind":"full"}`); code != 400 {
		t.Fatalf("unknown field = %d %s", code, body)
	}
	b.err = fmt.Errorf("%w: logical", backup.ErrBadKind)
	if code, _ := do(t, ts, "POST", "/backup", `{"type":"logical"}`); code != 400 {
		t.Fatalf("bad type = %d", code)
	}
	b.err = fmt.Errorf("%w: full backup a-0 on b", backup.ErrRunning)
	if code, body := do(t, ts, "POST", "/backup", `{}`); code != 409 || !strings.Contains(body, "already running") {
		t.Fatalf("while one runs = %d %s", code, body)
	}
	code, body := do(t, ts, "GET", "/backups", "")
	var v backup.View
	if code != 200 || json.Unmarshal([]byte(body), &v) != nil || len(v.Backups) != 1 || v.Running.Percent != 12.5 {
		t.Fatalf("GET /backups = %d %s", code, body)
	}
	_, metrics := do(t, ts, "GET", "/metrics", "")
	for _, want := range []string{
		`pgwarden_backup_last_success_timestamp_seconds{name="a",scope="main",type="full"} 1.7e+09`,
		`pgwarden_backup_duration_seconds{name="a",scope="main"} 3`,
		`pgwarden_wal_archive_failures_total{name="a",scope="main"} 4`,
		`pgwarden_wal_archive_last_success_timestamp_seconds{name="a",scope="main"} 1.70000005e+09`,
		`pgwarden_wal_archive_last_failure_timestamp_seconds{name="a",scope="main",segment="000000020000000000000009"} 1.7000001e+09`,
		`pgwarden_backup_schedule_next_due_timestamp_seconds{name="a",scope="main",type="diff"} 1.7000036e+09`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// withStatus is the agent status a backupServer answers from.
type withStatus struct{ Status agent.Status }

func TestBackupAPIOnAReplicaAndWithoutBackup(t *testing.T) {
	ts := backupServer(t, withStatus{replicaStatus}, &fakeBackups{}, nil)
	req, _ := http.NewRequest("POST", ts.URL+"/backup", strings.NewReader(`{"type":"full"}`))
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 307 || resp.Header.Get("Location") != "http://10.0.0.1:8008/backup" {
		t.Fatalf("POST /backup on a replica = %d Location %q; want 307 to the leader", resp.StatusCode, resp.Header.Get("Location"))
	}
	none := backupServer(t, withStatus{primaryStatus}, nil, nil)
	for _, r := range [][2]string{{"POST", "/backup"}, {"GET", "/backups"}} {
		if code, body := do(t, none, r[0], r[1], `{"type":"full"}`); code != 503 || !strings.Contains(body, "no backup configured") {
			t.Fatalf("%s %s without backup = %d %s", r[0], r[1], code, body)
		}
	}
	authed := backupServer(t, withStatus{primaryStatus}, &fakeBackups{}, &config.Credential{Username: "u", Password: "p"})
	if code, _ := do(t, authed, "POST", "/backup", `{}`); code != 401 {
		t.Fatalf("POST /backup without credentials = %d", code)
	}
	if code, _ := do(t, authed, "POST", "/backup", `{}`, "u", "p"); code != 202 {
		t.Fatalf("POST /backup with credentials = %d", code)
	}
}

// POST /drill runs a drill here for the leader, authenticated; the peer
// client tells a drill that ran (and its outcome) from one that could not.
func TestDrillAPIAndPeerClient(t *testing.T) {
	b := &fakeBackups{}
	ts := backupServer(t, withStatus{replicaStatus}, b, &config.Credential{Username: "u", Password: "p"})
	for _, cred := range [][]string{nil, {"u", "wrong"}} {
		if code, _ := do(t, ts, "POST", "/drill", `{"id":"a-1"}`, cred...); code != 401 {
			t.Fatalf("POST /drill with %v = %d; want 401", cred, code)
		}
	}
	for _, c := range []struct{ body, want string }{
		{`{}`, "id: required"},
		{`{"id":"a-1","type":"full"}`, "unknown field"},
		{`[1]`, "JSON object"},
	} {
		if code, body := do(t, ts, "POST", "/drill", c.body, "u", "p"); code != 400 || !strings.Contains(body, c.want) {
			t.Fatalf("POST /drill %s = %d %s; want 400 %q", c.body, code, body, c.want)
		}
	}
	if len(b.drills) != 0 {
		t.Fatalf("refused requests ran drills: %v", b.drills)
	}
	peer := dcs.Member{Name: "b", APIURL: ts.URL + "/"}
	pc := NewPeerClient("a", 50*time.Millisecond, nil, testlog.New(t))
	if _, ran, err := pc.RemoteDrill(t.Context(), peer, "a-1"); ran || err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without credentials: ran %v, %v; want a 401 and no drill", ran, err)
	}
	pc.Auth = &config.Credential{Username: "u", Password: "p"}
	// The fake answers at once; a real drill outlasts the client's status
	// timeout, which RemoteDrill does not apply.
	res, ran, err := pc.RemoteDrill(t.Context(), peer, "a-1")
	if !ran || err != nil || res.Member != "b" || res.Tables != 3 || b.drills[0] != "a-1" {
		t.Fatalf("drill = %+v, ran %v, %v", res, ran, err)
	}
	b.drillErr = backup.DrillFailed{Err: errors.New("drill: restore backup 20260101-000000F: bad checksum")}
	if _, ran, err := pc.RemoteDrill(t.Context(), peer, "a-1"); !ran || err == nil || !strings.Contains(err.Error(), "bad checksum") {
		t.Fatalf("failing drill: ran %v, %v; want it ran and failed", ran, err)
	}
	for _, c := range []struct {
		err  error
		code string
	}{
		{fmt.Errorf("%w: the lock holds nothing", backup.ErrNotLocked), "412"},
		{backup.ErrDrilling, "409"},
		{fmt.Errorf("drills: %w", backup.ErrNotConfigured), "503"},
	} {
		b.drillErr = c.err
		if _, ran, err := pc.RemoteDrill(t.Context(), peer, "a-1"); ran || err == nil || !strings.Contains(err.Error(), c.code) {
			t.Fatalf("%v: ran %v, %v; want %s and not ran", c.err, ran, err, c.code)
		}
	}
}

// A drill lasts longer than the server's write timeout (a restore of a
// whole backup): its answer still reaches the leader.
func TestDrillOutlastsTheWriteTimeout(t *testing.T) {
	f := &fakeAgent{st: replicaStatus}
	b := &fakeBackups{drillTakes: 600 * time.Millisecond}
	s, err := NewServer(Options{Agent: f, Backup: b}, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(s.Handler())
	ts.Config.WriteTimeout = 200 * time.Millisecond
	ts.Start()
	t.Cleanup(ts.Close)
	pc := NewPeerClient("a", 100*time.Millisecond, nil, testlog.New(t))
	res, ran, err := pc.RemoteDrill(t.Context(), dcs.Member{Name: "b", APIURL: ts.URL}, "a-1")
	if !ran || err != nil || res.Member != "b" {
		t.Fatalf("a drill of 600ms behind a 200ms write timeout: %+v, ran %v, %v", res, ran, err)
	}
}
