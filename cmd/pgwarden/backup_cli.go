package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/backup"
	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/dcs/etcd"
	"github.com/pgwarden/pgwarden/postgres"
	"github.com/pgwarden/pgwarden/wal"
)

// cmdBackupCreate asks the leader for a base backup and follows it to its
// end through GET /backups.
func cmdBackupCreate(e *env, args []string) error {
	fs := flags(e, "backup create", "-c FILE [--type "+backupKinds+"]")
	path := fs.String("c", os.Getenv("PGWARDEN_CONFIG"), "node or control configuration file")
	kind := fs.String("type", "full", "full, diff, incr or logical")
	if err := parse(fs, args); err != nil {
		return err
	}
	return withCluster(e, *path, func(cfg *config.Config, s *etcd.Store, c *dcs.Cluster) error {
		if c.Leader == nil {
			return errors.New("the cluster has no leader: backups run on the leader's primary")
		}
		url, err := memberAPI(c, "")
		if err != nil {
			return err
		}
		_, body, err := api(e.ctx, cfg, http.MethodPost, url+"/backup", map[string]string{"type": *kind})
		if err != nil {
			return err
		}
		var started struct {
			ID, Type, Member string
		}
		if err := json.Unmarshal(body, &started); err != nil || started.ID == "" {
			return fmt.Errorf("unexpected answer from %s: %s", url, body)
		}
		if started.Type == "drill" {
			fmt.Fprintf(e.stdout, "drill %s started by the leader %s (on a healthy replica's host; its own when none)\n", started.ID, started.Member)
		} else {
			fmt.Fprintf(e.stdout, "%s backup %s started on %s\n", started.Type, started.ID, started.Member)
		}
		return followBackup(e, cfg, s, url, started.ID, started.Type)
	})
}

// followBackup prints the run's progress until GET /backups records its
// end. When the member stops answering, etcd tells whether the run still
// holds the backup lock (it goes with its agent's lease).
func followBackup(e *env, cfg *config.Config, s *etcd.Store, url, id, kind string) error {
	start := time.Now()
	lastSeen := time.Now()
	lastPrinted := -1.0
	for {
		select {
		case <-e.ctx.Done():
			return fmt.Errorf("interrupted: the backup goes on on the leader (pgwarden backup list shows it)")
		case <-time.After(time.Second):
		}
		ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
		_, body, err := api(ctx, cfg, http.MethodGet, url+"/backups", nil)
		cancel()
		var v backup.View
		if err == nil {
			err = json.Unmarshal(body, &v)
		}
		if err != nil {
			if time.Since(lastSeen) > 5*time.Second {
				if c, cerr := s.Cluster(e.ctx); cerr == nil && (c.BackupLock == nil || c.BackupLock.ID != id) {
					return fmt.Errorf("backup %s did not complete: %s stopped answering (%v) and the run no longer holds the backup lock", id, url, err)
				}
			}
			if time.Since(lastSeen) > 5*time.Minute {
				return fmt.Errorf("lost contact with %s during the backup: %w", url, err)
			}
			continue
		}
		lastSeen = time.Now()
		if r, ok := v.LastRuns[kind]; ok && r.ID == id {
			if !r.OK {
				return fmt.Errorf("backup %s failed after %s: %s", id, r.Finished.Sub(r.Started).Round(100*time.Millisecond), r.Error)
			}
			repoSize := ""
			for _, b := range v.Backups {
				if b.Label == r.Label {
					repoSize = ", " + humanBytes(b.RepoSize) + " in the repository"
				}
			}
			if r.Kind == "drill" {
				fmt.Fprintf(e.stdout, "drill passed: %s\n", r.Details)
				return nil
			}
			fmt.Fprintf(e.stdout, "backup %s (%s): %s%s, in %s\n", r.Label, r.Kind, humanBytes(r.Size), repoSize,
				r.Finished.Sub(r.Started).Round(100*time.Millisecond))
			return nil
		}
		if r := v.Running; r != nil && r.ID == id && r.Percent != lastPrinted {
			lastPrinted = r.Percent
			fmt.Fprintf(e.stdout, "  %6.2f%%  %s  (%s)\n", r.Percent, humanBytes(r.Bytes), time.Since(start).Round(time.Second))
		}
	}
}

// cmdBackupList shows GET /backups of the leader (any member without one).
func cmdBackupList(e *env, args []string) error {
	fs := flags(e, "backup list", "-c FILE [--format table|json]")
	path := fs.String("c", os.Getenv("PGWARDEN_CONFIG"), "node or control configuration file")
	format := fs.String("format", "table", "table or json")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *format != "table" && *format != "json" {
		return fmt.Errorf("--format %q: must be table or json: %w", *format, errUsage)
	}
	return withCluster(e, *path, func(cfg *config.Config, _ *etcd.Store, c *dcs.Cluster) error {
		url, err := memberAPI(c, "")
		if err != nil {
			return err
		}
		_, body, err := api(e.ctx, cfg, http.MethodGet, url+"/backups", nil)
		if err != nil {
			return err
		}
		var v backup.View
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("unexpected answer from %s: %w", url, err)
		}
		if *format == "json" {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		return writeBackupTable(e.stdout, v)
	})
}

// keptFor is retention's reasons; none: the next expire removes it.
func keptFor(reasons []string) string {
	if len(reasons) == 0 {
		return "(expires)"
	}
	return strings.Join(reasons, ", ")
}

func writeBackupTable(w io.Writer, v backup.View) error {
	fmt.Fprintf(w, "Stanza: %s  repository: %s\n", v.Stanza, v.Repository)
	if v.Error != "" {
		fmt.Fprintf(w, "repository not readable: %s\n", v.Error)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LABEL\tTYPE\tSTART\tSTOP\tSIZE\tREPO\tWAL_START\tWAL_STOP\tTL\tRECOVERY\tRESTORABLE_TO\tKEPT_FOR")
	for _, b := range v.Backups {
		to := "-"
		if p := b.RestorableTo; p != nil {
			to = fmt.Sprintf("%s tl %d (%s archived %s)", p.LSN, p.Timeline, p.Segment, p.ArchivedAt.Format(time.RFC3339))
			if p.Missing != "" {
				to += ", gap at " + p.Missing
			}
		} else if b.Problem != "" {
			to = b.Problem
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", b.Label, b.Type, b.Start.Format(time.RFC3339), b.Stop.Format(time.RFC3339),
			humanBytes(b.Size), humanBytes(b.RepoSize), b.WALStart, b.WALStop, b.Timeline, orDash(b.Recovery), to, keptFor(b.Keep))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.Dumps) > 0 {
		dw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(dw, "DUMP\tTAKEN\tFROM\tSERVER\tLSN\tFILES\tSIZE\tKEPT_FOR")
		for _, d := range v.Dumps {
			from := d.Member
			if d.FromReplica {
				from += " (replica)"
			}
			fmt.Fprintf(dw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.Stamp, d.Started.Format(time.RFC3339), from, d.ServerVersion, d.LSN,
				len(d.Files), humanBytes(d.Size), keptFor(d.Keep))
		}
		if err := dw.Flush(); err != nil {
			return err
		}
	}
	if len(v.Backups) == 0 {
		fmt.Fprintln(w, "no backups yet")
	} else {
		fmt.Fprintln(w, "RESTORABLE_TO: the end of the newest WAL segment archived without a gap since the backup's start (exact);")
		fmt.Fprintln(w, "  as a time, when that segment was archived: its newest commit may be older by the time the segment took to fill.")
	}
	if r := v.Running; r != nil {
		fmt.Fprintf(w, "running: %s backup %s on %s since %s, %.2f%% (%s)\n", r.Type, r.ID, r.Member, r.Started.Format(time.RFC3339), r.Percent, humanBytes(r.Bytes))
	}
	for _, k := range backup.JobKinds {
		if r, ok := v.LastRuns[k]; ok && r.ID != "" {
			status := "ok " + r.Label
			switch {
			case !r.OK && k == "drill" && !r.LastSuccess.IsZero():
				status = "FAILED: " + r.Error + " (last passed " + r.LastSuccess.Format(time.RFC3339) + ")"
			case !r.OK:
				status = "FAILED: " + r.Error
			case k == "drill":
				status = "passed: " + r.Details
			}
			fmt.Fprintf(w, "last %s: %s on %s, finished %s: %s\n", k, r.ID, r.Member, r.Finished.Format(time.RFC3339), status)
		}
	}
	if a := v.Archiver; a != nil && a.FailedCount > 0 && a.LastFailedTime.After(a.LastArchivedTime) {
		fmt.Fprintf(w, "WAL archive failing on this member: %s (%s)\n", a.LastFailedWAL, a.FailureReason)
	}
	return nil
}

// localPgBackRest runs pgBackRest from this machine: the configuration's
// repository, dataDir as pg1-path, its own files under dir.
func localPgBackRest(cfg *config.Config, dataDir, dir string) (*backup.PgBackRest, error) {
	if cfg.Backup == nil {
		return nil, errors.New("this configuration has no backup section: the repository is not known")
	}
	o, err := backupOptions(cfg, dataDir, dir)
	if err != nil {
		return nil, err
	}
	pb := backup.New(o, hclog.NewNullLogger())
	return pb, pb.WriteConfig()
}

// scratchPgBackRest loads a configuration and runs pgBackRest from this
// machine with its files in a temporary directory that cleanup removes.
func scratchPgBackRest(path, what string) (*config.Config, *backup.PgBackRest, func(), error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, nil, nil, err
	}
	dir, err := os.MkdirTemp("", "pgwarden-"+what+"-")
	if err != nil {
		return nil, nil, nil, err
	}
	pb, err := localPgBackRest(cfg, cfg.Postgres.DataDir, dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	return cfg, pb, func() { os.RemoveAll(dir) }, nil
}

// cmdBackupVerify: pgBackRest's checksums, then the WAL from the oldest
// backup's start to the newest archived segment, along the newest
// timeline's history.
func cmdBackupVerify(e *env, args []string) error {
	fs := flags(e, "backup verify", "-c FILE")
	path := fs.String("c", os.Getenv("PGWARDEN_CONFIG"), "node configuration file (with its backup section)")
	if err := parse(fs, args); err != nil {
		return err
	}
	_, pb, cleanup, err := scratchPgBackRest(*path, "verify")
	if err != nil {
		return err
	}
	defer cleanup()
	report, err := pb.Verify(e.ctx)
	fmt.Fprint(e.stdout, report)
	if err != nil {
		return err
	}
	repo, err := pb.ReadRepository(e.ctx, "")
	if err != nil {
		return err
	}
	if len(repo.Info.Backups) == 0 {
		return errors.New("no backup in the repository")
	}
	oldest := repo.Info.Backups[0]
	w, err := repo.Archive.WalkFrom(oldest.WALStart, repo.History)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "WAL: %d segments from %s (oldest backup %s) to %s, timelines %v\n",
		w.Segments, w.From, oldest.Label, w.Newest, repo.History.Timelines())
	if len(w.MissingHistories) > 0 {
		return fmt.Errorf("timeline history files missing from the repository: %v", w.MissingHistories)
	}
	if w.Missing != nil {
		return fmt.Errorf("WAL segment %s missing from the repository: recovery from %s stops at %s", w.Missing, oldest.Label, w.Last.End())
	}
	fmt.Fprintln(e.stdout, "verify: ok")
	return nil
}

// cmdBackupRestore restores into an empty directory and leaves it ready to
// start (and, with --start, starts it) to recover to the target and stop.
func cmdBackupRestore(e *env, args []string) error {
	fs := flags(e, "backup restore", "-c FILE --data-dir DIR [--target-time T | --target-lsn L | --latest] [--target-action pause|promote|shutdown] [--start] [--port N]")
	path := fs.String("c", os.Getenv("PGWARDEN_CONFIG"), "node configuration file (with its backup section)")
	dataDir := fs.String("data-dir", "", "empty (or absent) directory to restore into")
	tt := fs.String("target-time", "", "RFC 3339 time to recover to")
	tl := fs.String("target-lsn", "", "WAL position (X/Y) to recover to")
	latest := fs.Bool("latest", false, "recover all archived WAL (the default)")
	action := fs.String("target-action", "pause", "at the target: pause (read-only, inspect), promote or shutdown")
	start := fs.Bool("start", false, "start PostgreSQL on it afterwards and wait until it reached the target")
	port := fs.Int("port", 0, "port for the restored server (default: the configuration's)")
	stanza := fs.String("stanza", "", "restore another cluster's stanza (default: this scope)")
	logical := fs.String("logical", "", "restore the logical dump STAMP (see backup list) into the server --dsn names")
	dsn := fs.String("dsn", "", "with --logical: the server to restore into, e.g. 'host=127.0.0.1 port=5433 user=postgres'")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *logical != "" {
		cfg, err := loadConfig(*path)
		if err != nil {
			return err
		}
		return restoreLogical(e, cfg, *logical, *dsn)
	}
	n := 0
	for _, set := range []bool{*tt != "", *tl != "", *latest} {
		if set {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("give one of --target-time, --target-lsn, --latest: %w", errUsage)
	}
	if *dataDir == "" || !filepath.IsAbs(*dataDir) {
		return fmt.Errorf("--data-dir must be an absolute path: %w", errUsage)
	}
	if *action != "pause" && *action != "promote" && *action != "shutdown" {
		return fmt.Errorf("--target-action %q: want pause, promote or shutdown: %w", *action, errUsage)
	}
	var target backup.Target
	if *tt != "" {
		t, err := time.Parse(time.RFC3339Nano, *tt)
		if err != nil {
			return fmt.Errorf("--target-time %q: want RFC 3339 with a zone, like 2026-11-23T03:00:00Z: %w", *tt, errUsage)
		}
		target.Time = t
	}
	if *tl != "" {
		l, err := wal.ParseLSN(*tl)
		if err != nil {
			return fmt.Errorf("--target-lsn: %v: %w", err, errUsage)
		}
		target.LSN, target.HasLSN = l, true
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		return errors.New("refusing to run as root: the restored files must belong to the database OS user (sudo -u postgres pgwarden backup restore ...)")
	}
	if err := emptyDir(*dataDir); err != nil {
		return err
	}
	if *port == 0 {
		_, p, _ := net.SplitHostPort(cfg.Postgres.Listen)
		*port, _ = strconv.Atoi(p)
	}
	pb, err := localPgBackRest(cfg, *dataDir, backupDir(*dataDir))
	if err != nil {
		return err
	}
	repo, err := pb.ReadRepository(e.ctx, *stanza)
	if err != nil {
		return err
	}
	plan, err := repo.Plan(target)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "restoring backup %s (%s, ended %s) into %s, to recover to %s\n",
		plan.Backup.Label, plan.Backup.Type, plan.Backup.Stop.Format(time.RFC3339), *dataDir, plan.Describe())
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return err
	}
	began := time.Now()
	last := time.Time{}
	err = pb.Restore(e.ctx, plan.Request(*stanza, *dataDir, *action), func(p backup.Progress) {
		if time.Since(last) >= time.Second || p.Percent >= 100 {
			last = time.Now()
			fmt.Fprintf(e.stdout, "  %6.2f%%  %s\n", p.Percent, humanBytes(p.Bytes))
		}
	})
	if err != nil {
		return err
	}
	if err := postgres.WriteStandaloneConf(restoredCopy(cfg, *dataDir, *port)); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "restored in %s: %s is ready to start (loopback port %d, archiving off)\n", time.Since(began).Round(100*time.Millisecond), *dataDir, *port)
	if !*start {
		fmt.Fprintf(e.stdout, "start it with: %s start -D %s -l %s.log\n", filepath.Join(cfg.Postgres.BinDir, "pg_ctl"), *dataDir, filepath.Clean(*dataDir))
		return nil
	}
	return startRestored(e, cfg, *dataDir, *port, plan, *action)
}

// restoredCopy is a restored data directory run away from the cluster,
// with this node's parameters and postgres.tls.
func restoredCopy(cfg *config.Config, dataDir string, port int) postgres.Standalone {
	return postgres.Standalone{DataDir: dataDir, Port: port, Parameters: cfg.Postgres.Parameters, TLS: pgTLS(cfg)}
}

// emptyDir: dir is absent or an empty directory; anything else is refused
// before anything is written.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case os.IsNotExist(err):
		return nil
	case err != nil:
		return fmt.Errorf("--data-dir %s: %w", dir, err)
	case len(entries) > 0:
		return fmt.Errorf("--data-dir %s is not empty (%d entries): refusing to restore over it; nothing was changed", dir, len(entries))
	}
	return nil
}

// startRestored starts the restored server and waits until recovery is
// over: paused at the target, promoted, or shut down there.
func startRestored(e *env, cfg *config.Config, dataDir string, port int, plan backup.RestorePlan, action string) error {
	logFile := filepath.Clean(dataDir) + ".log"
	cmd := exec.CommandContext(e.ctx, filepath.Join(cfg.Postgres.BinDir, "pg_ctl"), "start", "-D", dataDir, "-l", logFile, "-w", "-t", "600", "-s")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("start the restored server: %v: %s (see %s)", err, strings.TrimSpace(string(out)), logFile)
	}
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=%s connect_timeout=3", port, cfg.Postgres.Superuser.Username,
		restoredCopy(cfg, dataDir, port).SSLMode())
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return err
	}
	cc.Password = cfg.Postgres.Superuser.Password
	deadline := time.Now().Add(time.Hour)
	for {
		state, err := recoveryState(e.ctx, cc)
		switch {
		case err == nil && state == "primary":
			fmt.Fprintf(e.stdout, "started on 127.0.0.1:%d: recovered to %s and accepting writes (a new timeline)\n", port, plan.Describe())
			return nil
		case err == nil && state == "paused":
			fmt.Fprintf(e.stdout, "started on 127.0.0.1:%d: paused at %s, read-only (SELECT pg_promote() to open it for writes)\n", port, plan.Describe())
			return nil
		case action == "shutdown" && !pidAlive(dataDir):
			fmt.Fprintf(e.stdout, "recovered to %s and shut down there, as asked\n", plan.Describe())
			return nil
		}
		if time.Now().After(deadline) || e.ctx.Err() != nil {
			return fmt.Errorf("the restored server did not reach the target (see %s): %v", logFile, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func recoveryState(ctx context.Context, cc *pgx.ConnConfig) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return "", err
	}
	defer c.Close(context.Background())
	inRecovery, paused, err := postgres.ReplayPaused(ctx, c)
	switch {
	case err != nil:
		return "", err
	case !inRecovery:
		return "primary", nil
	case paused:
		return "paused", nil
	}
	return "recovering", nil
}

func pidAlive(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, "postmaster.pid"))
	return err == nil
}

// api calls a member's REST API with the file's credentials and TLS.
func api(ctx context.Context, cfg *config.Config, method, url string, body any) (int, []byte, error) {
	empty := ""
	c, err := newRESTClient(cfg, restFlags{ca: &empty, cert: &empty, key: &empty})
	if err != nil {
		return 0, nil, err
	}
	return c.do(ctx, method, url, body)
}
