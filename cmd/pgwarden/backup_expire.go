package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/backup"
	"github.com/pgwarden/pgwarden/config"
)

// cmdBackupExpire applies the retention policy now, from this machine:
// pgBackRest's own lock keeps it from racing a running backup.
func cmdBackupExpire(e *env, args []string) error {
	fs := flags(e, "backup expire", "-c FILE [--dry-run]")
	path := fs.String("c", os.Getenv("PGWARDEN_CONFIG"), "node configuration file (with its backup section)")
	dry := fs.Bool("dry-run", false, "say what would go and why, remove nothing")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, pb, cleanup, err := scratchPgBackRest(*path, "expire")
	if err != nil {
		return err
	}
	defer cleanup()
	loc, err := backupLocation(cfg.Backup)
	if err != nil {
		return err
	}
	repo, err := pb.ReadRepository(e.ctx, "")
	if err != nil {
		return err
	}
	root := dumpsRoot(cfg)
	dumps, err := backup.Dumps(root)
	if err != nil {
		return err
	}
	plan := backup.PlanExpiry(repo, dumps, backupPolicy(cfg.Backup), loc)
	if err := writeExpiryPlan(e.stdout, plan, *dry); err != nil {
		return err
	}
	if *dry || plan.Policy.KeepsAll() {
		return nil
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "expire", Output: e.stderr, Level: hclog.Info})
	if err := backup.ApplyExpiry(e.ctx, pb, plan, root, log); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "expire: done")
	return nil
}

func writeExpiryPlan(w io.Writer, plan backup.ExpiryPlan, dry bool) error {
	p := plan.Policy
	fmt.Fprintf(w, "Policy: daily %d, weekly %d, monthly %d, yearly %d\n", p.Daily, p.Weekly, p.Monthly, p.Yearly)
	if p.KeepsAll() {
		fmt.Fprintln(w, "every count is 0: everything is kept (set backup.retention to expire anything)")
	}
	remove := "remove"
	if dry {
		remove = "would remove"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WHAT\tID\tTIME\tDECISION")
	for _, group := range []struct {
		what string
		ds   []backup.Decision
	}{{"backup", plan.Backups}, {"dump", plan.Dumps}} {
		for _, d := range group.ds {
			decision := remove
			if d.Keep() {
				decision = "keep: " + strings.Join(d.Reasons, ", ")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", group.what, d.ID, d.Time.UTC().Format(time.RFC3339), decision)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if plan.PITRFrom != "" {
		fmt.Fprintf(w, "WAL: continuous from %s on (point-in-time recovery); older kept backups restore to their end only\n", plan.PITRFrom)
	}
	return nil
}

// cmdBackupDrill asks the leader for a restore drill and follows it.
func cmdBackupDrill(e *env, args []string) error {
	for _, a := range args {
		if strings.HasPrefix(a, "--type") || strings.HasPrefix(a, "-type") {
			return fmt.Errorf("backup drill takes no --type: %w", errUsage)
		}
	}
	return cmdBackupCreate(e, append([]string{"--type", "drill"}, args...))
}

// restoreLogical is backup restore --logical STAMP --dsn DSN.
func restoreLogical(e *env, cfg *config.Config, stamp, dsn string) error {
	root := dumpsRoot(cfg)
	if root == "" {
		return errors.New("logical dumps are kept in backup.repository (a directory): this configuration has none")
	}
	if dsn == "" {
		return fmt.Errorf("--logical needs --dsn: the server to restore into: %w", errUsage)
	}
	dir := filepath.Join(root, filepath.Base(stamp))
	log := hclog.New(&hclog.LoggerOptions{Name: "restore", Output: e.stderr, Level: hclog.Info})
	began := time.Now()
	m, err := backup.RestoreDump(e.ctx, cfg.Postgres.BinDir, dir, dsn, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "restored dump %s (taken from %s at %s, PostgreSQL %s): globals and %d databases in %s\n",
		m.Stamp, m.Member, m.LSN, m.ServerVersion, len(m.Files)-1, time.Since(began).Round(100*time.Millisecond))
	return nil
}
