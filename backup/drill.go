package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/internal/freeport"
	"github.com/pgwarden/pgwarden/postgres"
)

// Restorer is what a drill needs of pgBackRest (*PgBackRest).
type Restorer interface {
	ReadRepository(ctx context.Context, stanza string) (Repository, error)
	Restore(ctx context.Context, r RestoreRequest, progress func(Progress)) error
}

// Driller restores the newest base backup into a scratch directory, starts
// it on a free loopback port with no archiving and no upstream, lets it
// recover to the end of the archive, checks it, and removes it; then checks
// the newest logical dump file by file.
type Driller struct {
	Engine Restorer
	// BinDir holds pg_ctl, pg_amcheck, pg_restore.
	BinDir string
	// Scratch is the directory the scratch copy is made in (its own
	// subdirectory, removed at the end).
	Scratch string
	// Login is the superuser of the restored copy (the cluster's).
	Login Login
	// Parameters are the operator's PostgreSQL parameters (shared_buffers
	// and the like); the ones that would reach the cluster are overridden.
	Parameters map[string]string
	// Dumps is <repository>/logical/<scope> ("" when dumps are not kept
	// on a filesystem).
	Dumps string
	// TLS is the node's postgres.tls (nil without): the copy runs with it.
	TLS *postgres.TLS
	// Timeout bounds the restored server's recovery.
	Timeout time.Duration
	Log     hclog.Logger
}

// DrillResult is what a drill found.
type DrillResult struct {
	// Member is who ran it, in Scratch (its own subdirectory, removed at
	// the end).
	Member      string        `json:"member,omitempty"`
	Scratch     string        `json:"scratch,omitempty"`
	Backup      string        `json:"backup"`
	RecoveredTo string        `json:"recovered_to,omitempty"`
	Databases   int           `json:"databases"`
	Tables      int           `json:"tables"`
	Rows        int64         `json:"rows"`
	Amcheck     string        `json:"amcheck"`
	RestoreTook time.Duration `json:"restore_took"`
	Took        time.Duration `json:"took"`
	Dump        string        `json:"dump,omitempty"`
	DumpFiles   int           `json:"dump_files,omitempty"`
}

// summary is the result in one line.
func (r DrillResult) summary() string {
	s := ""
	if r.Member != "" {
		s = fmt.Sprintf("on %s in %s (removed): ", r.Member, r.Scratch)
	}
	s += fmt.Sprintf("backup %s restored in %s, recovered to %s; %d databases, %d tables, %d rows read; amcheck %s",
		r.Backup, r.RestoreTook.Round(100*time.Millisecond), r.RecoveredTo, r.Databases, r.Tables, r.Rows, r.Amcheck)
	if r.Dump != "" {
		s += fmt.Sprintf("; dump %s: %d files match their checksums and read back", r.Dump, r.DumpFiles)
	}
	return s + fmt.Sprintf("; %s in all", r.Took.Round(100*time.Millisecond))
}

// Drill runs one drill. Its error says which step failed and why.
func (d *Driller) Drill(ctx context.Context) (DrillResult, error) {
	began := time.Now()
	var res DrillResult
	repo, err := d.Engine.ReadRepository(ctx, "")
	if err != nil {
		return res, fmt.Errorf("drill: read the repository: %w", err)
	}
	plan, err := repo.Plan(Target{})
	if err != nil {
		return res, fmt.Errorf("drill: %w", err)
	}
	res.Backup = plan.Backup.Label
	if err := os.MkdirAll(d.Scratch, 0o700); err != nil {
		return res, fmt.Errorf("drill: %w", err)
	}
	dir, err := os.MkdirTemp(d.Scratch, "pgwarden-drill-")
	if err != nil {
		return res, fmt.Errorf("drill: %w", err)
	}
	defer os.RemoveAll(dir)
	res.Scratch = dir
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return res, fmt.Errorf("drill: %w", err)
	}
	rb := time.Now()
	if err := d.Engine.Restore(ctx, plan.Request("", data, ""), nil); err != nil {
		return res, fmt.Errorf("drill: restore backup %s: %w", plan.Backup.Label, err)
	}
	res.RestoreTook = time.Since(rb)
	port, err := freeport.Pick()
	if err != nil {
		return res, fmt.Errorf("drill: find a port for the restored copy: %w", err)
	}
	if err := postgres.WriteStandaloneConf(d.standalone(data, port)); err != nil {
		return res, fmt.Errorf("drill: set up the restored copy: %w", err)
	}
	logFile := filepath.Join(dir, "postgresql.log")
	stop, err := d.start(ctx, data, logFile)
	if err != nil {
		return res, err
	}
	defer stop()
	if err := d.check(ctx, port, logFile, &res); err != nil {
		return res, err
	}
	if err := stop(); err != nil {
		return res, err
	}
	if d.Dumps != "" {
		dumps, err := Dumps(d.Dumps)
		if err != nil {
			return res, fmt.Errorf("drill: %w", err)
		}
		if n := len(dumps); n > 0 {
			newest := dumps[n-1]
			if _, err := verifyDump(ctx, d.BinDir, filepath.Join(d.Dumps, newest.Stamp), d.Log); err != nil {
				return res, fmt.Errorf("drill: logical %w", err)
			}
			res.Dump, res.DumpFiles = newest.Stamp, len(newest.Files)
		}
	}
	res.Took = time.Since(began)
	return res, nil
}

func (d *Driller) standalone(data string, port int) postgres.Standalone {
	return postgres.Standalone{DataDir: data, Port: port, Parameters: d.Parameters, TLS: d.TLS}
}

// start starts the restored copy; stop (safe to call twice) stops it
// fast and waits.
func (d *Driller) start(ctx context.Context, data, logFile string) (func() error, error) {
	pgctl := filepath.Join(d.BinDir, "pg_ctl")
	// -w waits only for the postmaster to accept connections (in recovery,
	// not before consistency); check waits for the end of recovery.
	cmd := exec.CommandContext(ctx, pgctl, "start", "-D", data, "-l", logFile, "-w", "-t", "120", "-s")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("drill: start the restored copy: %v: %s; its log: %s", err, strings.TrimSpace(string(out)), tailFile(logFile, 5))
	}
	stopped := false
	return func() error {
		if stopped {
			return nil
		}
		stopped = true
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(sctx, pgctl, "stop", "-D", data, "-m", "fast", "-w", "-t", "90", "-s").CombinedOutput()
		if err != nil {
			return fmt.Errorf("drill: stop the restored copy: %v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}, nil
}

// check waits for the end of recovery (it reached consistency and
// replayed the archive), reads every user table through, and runs
// pg_amcheck when it is installed.
func (d *Driller) check(ctx context.Context, port int, logFile string, res *DrillResult) error {
	sslmode := d.standalone("", port).SSLMode()
	cc, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d dbname=postgres sslmode=%s connect_timeout=3", port, sslmode))
	if err != nil {
		return err
	}
	cc.User, cc.Password = d.Login.User, d.Login.Password
	timeout := d.Timeout
	if timeout == 0 {
		timeout = 30 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	var conn *pgx.Conn
	for attempt := 0; ; attempt++ {
		var lastErr error
		conn, lastErr = pgx.ConnectConfig(ctx, cc)
		if lastErr == nil {
			var inRecovery bool
			if inRecovery, lastErr = postgres.InRecovery(ctx, conn); lastErr == nil && !inRecovery {
				break
			}
			conn.Close(ctx)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("drill: the restored copy did not finish recovery within %s (%v); its log: %s", timeout, lastErr, tailFile(logFile, 5))
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt+1)*100*time.Millisecond, 2*time.Second)):
		}
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// The end of recovery: where replay stopped, from the new timeline's
	// start (checkpoint's redo) as the server reports it.
	if res.RecoveredTo, err = postgres.CurrentLSN(ctx, conn); err != nil {
		return fmt.Errorf("drill: read the restored copy's position: %w", err)
	}
	dbs, err := postgres.Databases(ctx, conn)
	if err != nil {
		return fmt.Errorf("drill: list databases: %w", err)
	}
	res.Databases = len(dbs)
	for _, db := range dbs {
		if err := d.readTables(ctx, cc, db, res); err != nil {
			return err
		}
	}
	res.Amcheck = "not installed"
	if amcheck := filepath.Join(d.BinDir, "pg_amcheck"); fileExists(amcheck) {
		args := []string{"--host=127.0.0.1", fmt.Sprintf("--port=%d", port), "--username=" + d.Login.User, "--no-password",
			"--all", "--install-missing", "--heapallindexed"}
		if _, err := runTool(ctx, amcheck, args, append(loginEnv(d.Login), "PGSSLMODE="+sslmode), d.Log); err != nil {
			return fmt.Errorf("drill: pg_amcheck found corruption in the restored copy: %w", err)
		}
		res.Amcheck = "passed"
	}
	return nil
}

// readTables reads every row of every user table of db, by sequential
// scan: a page that cannot be read fails the drill.
func (d *Driller) readTables(ctx context.Context, base *pgx.ConnConfig, db string, res *DrillResult) error {
	cc := base.Copy()
	cc.Database = db
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("drill: connect to database %s: %w", db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sqlSeqScanOnly); err != nil {
		return fmt.Errorf("drill: database %s: %w", db, err)
	}
	rows, err := conn.Query(ctx, sqlUserTables)
	if err != nil {
		return fmt.Errorf("drill: database %s: list tables: %w", db, err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("drill: database %s: list tables: %w", db, err)
	}
	for _, t := range tables {
		var n int64
		if err := conn.QueryRow(ctx, sqlReadTable(t)).Scan(&n, new(int64)); err != nil {
			return fmt.Errorf("drill: database %s: table %s cannot be read: %w", db, t, err)
		}
		res.Tables++
		res.Rows += n
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func tailFile(p string, n int) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return lastLines(string(b), n)
}

// errNoDrill: drills need the PostgreSQL binaries on this host.
var errNoDrill = errors.New("no restore drill configured")
