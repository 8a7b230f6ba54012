package pooler

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/internal/testlog"
)

func testCfg(t *testing.T) config.PgBouncer {
	return config.PgBouncer{
		AdminDSN:      "host=127.0.0.1 port=6432 dbname=pgbouncer user=pgbouncer",
		DatabasesFile: filepath.Join(t.TempDir(), "db.ini"),
		Databases: map[string]config.PoolerDB{
			"zeta": {DBName: "app", Target: "local"},
			"app":  {DBName: "app", Target: "primary", PoolMode: "transaction"},
		},
	}
}

func TestRender(t *testing.T) {
	p, err := New(testCfg(t), "127.0.0.1:5433", nil, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	want := "; Managed by pgwarden: rewritten whole whenever the leader changes.\n[databases]\n" +
		"app = host=10.0.0.1 port=5432 dbname=app pool_mode=transaction\n" +
		"zeta = host=127.0.0.1 port=5433 dbname=app\n"
	if got := p.render("10.0.0.1:5432"); got != want {
		t.Fatalf("render:\n%s\nwant:\n%s", got, want)
	}
	if got := p.render(""); !strings.Contains(got, "app = host="+noLeaderHost+" port=5432") || !strings.Contains(got, "zeta = host=127.0.0.1 port=5433") {
		t.Fatalf("render without leader:\n%s", got)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	c := testCfg(t)
	c.DatabasesFile = "/nonexistent-dir/db.ini"
	if _, err := New(c, "127.0.0.1:5432", nil, testlog.New(t)); err == nil || !strings.Contains(err.Error(), "databases_file") {
		t.Fatalf("unwritable databases_file accepted: %v", err)
	}
	c = testCfg(t)
	c.AdminDSN = "host=x port=notaport"
	if _, err := New(c, "127.0.0.1:5432", nil, testlog.New(t)); err == nil || !strings.Contains(err.Error(), "admin_dsn") {
		t.Fatalf("bad admin_dsn accepted: %v", err)
	}
	if _, err := New(testCfg(t), "nohostport", nil, testlog.New(t)); err == nil {
		t.Fatal("bad local address accepted")
	}
}

func result(cols []string, rows ...[]string) []*pgconn.Result {
	r := &pgconn.Result{}
	for _, c := range cols {
		r.FieldDescriptions = append(r.FieldDescriptions, pgconn.FieldDescription{Name: c})
	}
	for _, row := range rows {
		var rr [][]byte
		for _, v := range row {
			rr = append(rr, []byte(v))
		}
		r.Rows = append(r.Rows, rr)
	}
	return []*pgconn.Result{r}
}

func TestVerifyReadsColumnsByName(t *testing.T) {
	p, _ := New(testCfg(t), "127.0.0.1:5433", nil, testlog.New(t))
	// Column order as some version prints it, with extra columns.
	cols := []string{"name", "host", "port", "database", "force_user", "pool_size", "paused", "disabled"}
	good := result(cols, []string{"app", "10.0.0.1", "5432", "app", "", "20", "0", "0"}, []string{"zeta", "127.0.0.1", "5433", "app", "", "20", "1", "0"},
		[]string{"pgbouncer", "", "6432", "pgbouncer", "pgbouncer", "2", "0", "0"})
	dbs, err := parseShowDatabases(good)
	if err != nil {
		t.Fatal(err)
	}
	if !dbs["zeta"].paused || dbs["app"].paused {
		t.Fatalf("paused column misread: %+v", dbs)
	}
	if err := p.verify(dbs, "10.0.0.1:5432"); err != nil {
		t.Fatalf("verify good: %v", err)
	}
	// RELOAD "succeeded" but the old host is still there.
	if err := p.verify(dbs, "10.0.0.2:5432"); err == nil || !strings.Contains(err.Error(), "app points at 10.0.0.1:5432, want 10.0.0.2:5432") {
		t.Fatalf("stale host not detected: %v", err)
	}
	delete(dbs, "zeta")
	if err := p.verify(dbs, "10.0.0.1:5432"); err == nil || !strings.Contains(err.Error(), "zeta missing") {
		t.Fatalf("missing db not detected: %v", err)
	}
	if _, err := parseShowDatabases(result([]string{"name", "port"})); err == nil {
		t.Fatal("SHOW DATABASES without host column accepted")
	}
}

func TestAlreadyDone(t *testing.T) {
	for _, s := range []string{"ERROR: already suspended/paused", "ERROR: database app is not paused"} {
		if !alreadyDone(errString(s)) {
			t.Errorf("%q not treated as done", s)
		}
	}
	if alreadyDone(errString("ERROR: no such database: x")) || alreadyDone(nil) {
		t.Error("real error treated as done")
	}
}

type errString string

func (e errString) Error() string { return string(e) }
