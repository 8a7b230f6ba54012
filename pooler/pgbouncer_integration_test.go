//go:build integration

package pooler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/integration/harness"
	"github.com/pgwarden/pgwarden/internal/pgbouncerini"
	"github.com/pgwarden/pgwarden/internal/testlog"
	"github.com/pgwarden/pgwarden/postgres"
	"github.com/pgwarden/pgwarden/rest/resttest"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

func startPG(t *testing.T, name string) string {
	t.Helper()
	dir := harness.Dir(t, name)
	addr := fmt.Sprintf("127.0.0.1:%d", harness.Port(t))
	s := postgres.New(postgres.Config{BinDir: harness.PgBinDir(t), DataDir: filepath.Join(dir, "data"), Listen: addr,
		SuperUser: "postgres", SuperPassword: "pw", ReplUser: "rep", ReplPassword: "rp",
		Parameters: map[string]string{"unix_socket_directories": dir, "shared_buffers": "16MB", "fsync": "off"}}, testlog.New(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := s.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.Stop(ctx, "immediate")
	})
	return addr
}

type bouncer struct {
	port int
	p    *PgBouncer
}

func startBouncer(t *testing.T, local string, pause time.Duration) *bouncer {
	t.Helper()
	dir := harness.Dir(t, "pgbouncer")
	port := harness.Port(t)
	dbFile := harness.StartPgBouncer(t, dir, port, "pw", "").DatabasesFile
	cfg := config.PgBouncer{
		AdminDSN:      fmt.Sprintf("host=127.0.0.1 port=%d dbname=pgbouncer user=pgbouncer connect_timeout=2", port),
		DatabasesFile: dbFile,
		Databases:     map[string]config.PoolerDB{"app": {DBName: "postgres", Target: "primary"}, "mine": {DBName: "postgres", Target: "local"}},
		PauseTimeout:  config.Duration(pause),
	}
	p, err := New(cfg, local, nil, testlog.New(t).Named("pooler"))
	if err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 10*time.Second, "pgbouncer admin console", func() (bool, error) {
		_, err := p.showDatabases(context.Background())
		return err == nil, err
	})
	return &bouncer{port: port, p: p}
}

func (b *bouncer) dsn(db string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=pw dbname=%s sslmode=disable default_query_exec_mode=simple_protocol", b.port, db)
}

func serverPort(ctx context.Context, c *pgx.Conn) (int, error) {
	var p int
	err := c.QueryRow(ctx, "SELECT inet_server_port()").Scan(&p)
	return p, err
}

func portOf(addr string) int {
	var p int
	fmt.Sscanf(addr[strings.LastIndexByte(addr, ':')+1:], "%d", &p)
	return p
}

func TestRepointPauseResume(t *testing.T) {
	a, b := startPG(t, "a"), startPG(t, "b")
	bn := startBouncer(t, b, 3*time.Second)
	ctx := context.Background()
	if err := bn.p.SetLeader(ctx, a); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, bn.dsn("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if p, err := serverPort(ctx, conn); err != nil || p != portOf(a) {
		t.Fatalf("app reaches port %d (%v); want %s", p, err, a)
	}
	local, err := pgx.Connect(ctx, bn.dsn("mine"))
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := serverPort(ctx, local); p != portOf(b) {
		t.Fatalf("local entry reaches %d; want %s", p, b)
	}
	local.Close(ctx)

	// A persistent session querying every 10 ms through Pause, repoint, Resume.
	var mu sync.Mutex
	var errs []string
	var last, answered int
	var maxGap time.Duration
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		prev := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			qctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			p, err := serverPort(qctx, conn)
			cancel()
			mu.Lock()
			if err != nil {
				errs = append(errs, err.Error())
			} else {
				last = p
				answered++
				maxGap = max(maxGap, time.Since(prev))
				prev = time.Now()
			}
			mu.Unlock()
		}
	}()
	harness.WaitFor(t, 10*time.Second, "the client querying before the cycle", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return answered >= 3, fmt.Errorf("%d answers", answered)
	})
	start := time.Now()
	if err := bn.p.Pause(ctx); err != nil {
		t.Fatalf("pause: %v", err)
	}
	if err := bn.p.SetLeader(ctx, b); err != nil {
		t.Fatalf("repoint: %v", err)
	}
	if err := bn.p.Resume(ctx); err != nil {
		t.Fatalf("resume: %v", err)
	}
	cycle := time.Since(start)
	harness.WaitFor(t, 2*time.Second, "session reaches the new leader", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return last == portOf(b), fmt.Errorf("last port %d", last)
	})
	close(stop)
	<-done
	if len(errs) > 0 {
		t.Fatalf("%d client errors across pause/repoint/resume, first: %s", len(errs), errs[0])
	}
	t.Logf("pause+repoint+resume cycle %s; longest client gap %s", cycle.Round(time.Millisecond), maxGap.Round(time.Millisecond))
	dbs, err := bn.p.showDatabases(ctx)
	if err != nil || dbs["app"].paused || dbs["app"].port != fmt.Sprint(portOf(b)) {
		t.Fatalf("after cycle: %+v %v", dbs, err)
	}

	// No leader: the primary entry points nowhere, the local one stays.
	if err := bn.p.SetLeader(ctx, ""); err != nil {
		t.Fatal(err)
	}
	dbs, _ = bn.p.showDatabases(ctx)
	if dbs["app"].host != noLeaderHost || dbs["mine"].port != fmt.Sprint(portOf(b)) {
		t.Fatalf("without a leader: %+v", dbs)
	}
	if bn.p.State() != "ok" {
		t.Fatalf("state %q", bn.p.State())
	}
}

// TestPauseDeadline: a transaction held open keeps PAUSE from completing;
// Pause gives up by its deadline, kills the connections and resumes.
func TestPauseDeadline(t *testing.T) {
	a := startPG(t, "a")
	bn := startBouncer(t, a, 2*time.Second)
	ctx := context.Background()
	if err := bn.p.SetLeader(ctx, a); err != nil {
		t.Fatal(err)
	}
	holder, err := pgx.Connect(ctx, bn.dsn("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	if _, err := holder.Exec(ctx, "BEGIN; SELECT 1"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = bn.p.Pause(ctx)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("pause with an open transaction = %v; want a timeout", err)
	}
	if took > 5*time.Second {
		t.Fatalf("pause took %s; deadline 2s", took)
	}
	dbs, err := bn.p.showDatabases(ctx)
	if err != nil || dbs["app"].paused {
		t.Fatalf("database left paused: %+v %v", dbs, err)
	}
	c, err := pgx.Connect(ctx, bn.dsn("app"))
	if err != nil {
		t.Fatalf("new client after the timed-out pause: %v", err)
	}
	defer c.Close(ctx)
	if _, err := serverPort(ctx, c); err != nil {
		t.Fatalf("query after the timed-out pause: %v", err)
	}
	if err := bn.p.Resume(ctx); err != nil {
		t.Fatalf("resume after timeout: %v", err)
	}
	t.Logf("pause gave up after %s", took.Round(time.Millisecond))
}

// TestResumeAllAfterCrash: a database left paused (an agent died mid
// switchover) is resumed at start.
func TestResumeAllAfterCrash(t *testing.T) {
	a := startPG(t, "a")
	bn := startBouncer(t, a, 2*time.Second)
	ctx := context.Background()
	if err := bn.p.SetLeader(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := bn.p.admin(ctx, "PAUSE app"); err != nil {
		t.Fatal(err)
	}
	dbs, _ := bn.p.showDatabases(ctx)
	if !dbs["app"].paused {
		t.Fatal("PAUSE did not pause")
	}
	fresh, err := New(bn.p.cfg, a, nil, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.ResumeAll(ctx); err != nil {
		t.Fatal(err)
	}
	dbs, _ = fresh.showDatabases(ctx)
	if dbs["app"].paused {
		t.Fatal("ResumeAll left app paused")
	}
}

// TestSetDatabasesReloads: databases re-read from the file (SIGHUP) reach
// PgBouncer at once, pointed at the leader it already follows; with none
// the managed set must not become empty.
func TestSetDatabasesReloads(t *testing.T) {
	a := startPG(t, "a")
	bn := startBouncer(t, a, 3*time.Second)
	ctx := context.Background()
	if err := bn.p.SetLeader(ctx, a); err != nil {
		t.Fatal(err)
	}
	dbs := map[string]config.PoolerDB{"app": {DBName: "postgres", Target: "primary"}, "reports": {DBName: "postgres", Target: "primary"}}
	if err := bn.p.SetDatabases(ctx, dbs); err != nil {
		t.Fatal(err)
	}
	got, err := bn.p.showDatabases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := got["reports"]; !ok || r.port != fmt.Sprint(portOf(a)) {
		t.Fatalf("pgbouncer databases after SetDatabases: %v; want reports at %s", got, a)
	}
	conn, err := pgx.Connect(ctx, bn.dsn("reports"))
	if err != nil {
		t.Fatalf("connect through the added database: %v", err)
	}
	conn.Close(ctx)
	if err := bn.p.SetDatabases(ctx, nil); err == nil || !strings.Contains(err.Error(), "pooler.pgbouncer.databases") {
		t.Fatalf("SetDatabases(nil): %v; want an error naming pooler.pgbouncer.databases", err)
	}
	if names := bn.p.names(""); len(names) != 2 {
		t.Fatalf("managed databases after a refused SetDatabases: %v", names)
	}
}

// TestPgBouncerWithoutServerTLSIsAnError: with postgres.tls the servers
// take TCP only over TLS, so a PgBouncer whose pgbouncer.ini does not ask
// for it would fail every server login; the pooler's state says so,
// naming the setting. With server_tls_sslmode = verify-full the same
// repoint is clean.
func TestPgBouncerWithoutServerTLSIsAnError(t *testing.T) {
	dir := harness.Dir(t, "pki")
	pgTLS := &config.TLS{CA: resttest.NewCA(t, dir, "ca").File, Cert: "/c", Key: "/k"}
	plain, err := New(startBouncer(t, "127.0.0.1:5432", time.Second).p.cfg, "127.0.0.1:5432", pgTLS, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	// The repoint itself works (a paused pooler is resumed after it); the
	// state says why server logins will fail, and keeps saying it.
	if err := plain.SetLeader(context.Background(), "127.0.0.1:5433"); err != nil {
		t.Fatalf("repoint: %v", err)
	}
	for _, step := range []string{"repoint", "resume"} {
		if step == "resume" {
			if err := plain.Resume(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		st := plain.State()
		if !strings.HasPrefix(st, "error: pgbouncer server_tls_sslmode is disable") || !strings.Contains(st, "set server_tls_sslmode = verify-full") {
			t.Fatalf("state after %s %q; want the server_tls_sslmode error", step, st)
		}
	}

	port := harness.Port(t)
	dbFile := harness.StartPgBouncer(t, harness.Dir(t, "pgbouncer-tls"), port, "pw", "", func(f *pgbouncerini.File) {
		f.ServerTLSMode, f.ServerTLSCAFile = "verify-full", pgTLS.CA
	}).DatabasesFile
	cfg := plain.cfg
	cfg.AdminDSN = fmt.Sprintf("host=127.0.0.1 port=%d dbname=pgbouncer user=pgbouncer connect_timeout=2", port)
	cfg.DatabasesFile = dbFile
	p, err := New(cfg, "127.0.0.1:5432", pgTLS, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 10*time.Second, "repointed with server TLS", func() (bool, error) {
		err := p.SetLeader(context.Background(), "127.0.0.1:5433")
		return err == nil && p.State() == "ok", fmt.Errorf("%v, state %q", err, p.State())
	})
}
