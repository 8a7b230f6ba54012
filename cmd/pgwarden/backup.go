package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/backup"
	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/dcs/etcd"
	"github.com/pgwarden/pgwarden/hooks"
	"github.com/pgwarden/pgwarden/postgres"
)

// backupDir is this node's own pgBackRest directory: beside the data
// directory (not inside: pg_basebackup and restores would copy it).
func backupDir(dataDir string) string { return filepath.Clean(dataDir) + ".pgbackrest" }

// backupOptions are the pgBackRest settings of a configuration, for the
// data directory dataDir and pgBackRest directory dir.
func backupOptions(cfg *config.Config, dataDir, dir string) (backup.Options, error) {
	b := cfg.Backup
	_, port, err := net.SplitHostPort(cfg.Postgres.Listen)
	if err != nil {
		return backup.Options{}, fmt.Errorf("postgres.listen: %w", err)
	}
	p, _ := strconv.Atoi(port)
	o := backup.Options{
		Stanza: cfg.Scope, Dir: dir, PgPath: dataDir, PgPort: p,
		PgSocket:   postgres.Config{Parameters: cfg.Postgres.Parameters}.SocketDir(),
		PgUser:     cfg.Postgres.Superuser.Username,
		PgPassword: cfg.Postgres.Superuser.Password,
		Repository: b.Repository, Compress: b.Compress, ProcessMax: b.ProcessMax,
	}
	if s := b.S3; s != nil {
		key, err := readSecret("backup.s3.key_file", s.KeyFile)
		if err != nil {
			return o, err
		}
		secret, err := readSecret("backup.s3.secret_file", s.SecretFile)
		if err != nil {
			return o, err
		}
		o.S3 = &backup.S3{Bucket: s.Bucket, Endpoint: s.Endpoint, Region: s.Region, URIStyle: s.URIStyle, Path: s.Path,
			Key: key, Secret: secret, CAFile: s.CAFile, VerifyTLS: s.VerifyTLSValue()}
	}
	return o, nil
}

func readSecret(key, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// archiveSettings are archive_command and restore_command of a node with
// backup.archive_wal (nil without). archive_mode is "on" (pgBackRest 2.45
// refuses to back up with "always"): the primary archives; the segments a
// primary had not archived when it died are pushed by the replica promoted
// in its place (backup.PgBackRest.PushMissing).
func archiveSettings(cfg *config.Config) *postgres.Archive {
	if cfg.Backup == nil || !cfg.Backup.ArchiveWAL {
		return nil
	}
	o, err := backupOptions(cfg, cfg.Postgres.DataDir, backupDir(cfg.Postgres.DataDir))
	if err != nil {
		return nil // wireBackup reports it
	}
	self, err := os.Executable()
	if err != nil {
		self = "pgwarden"
	}
	return &postgres.Archive{Mode: "on", Command: o.ArchiveCommand(self), RestoreCommand: o.RestoreCommand()}
}

// wireBackup writes this node's pgBackRest configuration and makes the
// backup manager: told by the HA loop whether this node leads, serving
// GET/POST /backup, and creating clusters and replicas from the repository.
func wireBackup(cfg *config.Config, log hclog.Logger, store *etcd.Store, deps *agent.Deps, h *hooks.Runner, peers backup.RemoteDriller) (*backup.Manager, error) {
	if cfg.Backup == nil {
		return nil, nil
	}
	o, err := backupOptions(cfg, cfg.Postgres.DataDir, backupDir(cfg.Postgres.DataDir))
	if err != nil {
		return nil, err
	}
	pb := backup.New(o, log)
	if err := pb.WriteConfig(); err != nil {
		return nil, err
	}
	// Drills run on a healthy replica's host, asked over its REST API.
	mc := backup.ManagerConfig{Member: cfg.Name, Engine: pb, Lock: store, Remote: peers}
	if cfg.Backup.ArchiveWAL {
		// Its own connection: the HA loop's is never waited for.
		mc.Archiver = newPostgres(cfg, log.Named("archiver")).s
	}
	if h != nil {
		mc.Hooks = h
	}
	if err := scheduledJobs(cfg, pb, &mc, log); err != nil {
		return nil, err
	}
	m := backup.NewManager(mc, log)
	deps.Backup = m
	if pg, ok := deps.Postgres.(pgAdapter); ok {
		deps.Postgres = backupPG{pgAdapter: pg, pb: pb, cfg: cfg, log: log}
	}
	return m, nil
}

// backupPG is the local PostgreSQL with the repository as a source: a new
// cluster restored from a backup (bootstrap.method backup) and replicas
// restored from one (postgres.create_replica_methods).
type backupPG struct {
	pgAdapter
	pb  *backup.PgBackRest
	cfg *config.Config
	log hclog.Logger
}

// Bootstrap restores the source cluster's backup (bootstrap.stanza) and
// recovers it to bootstrap.target_time (default: all archived WAL); the
// server promotes itself there and is left stopped, as after initdb. Its
// own WAL then goes to its own stanza.
func (p backupPG) Bootstrap(ctx context.Context) error {
	bs := p.cfg.Bootstrap
	if bs.Method != "backup" {
		return p.pgAdapter.Bootstrap(ctx)
	}
	repo, err := p.pb.ReadRepository(ctx, bs.Stanza)
	if err != nil {
		return fmt.Errorf("bootstrap from stanza %s: %w", bs.Stanza, err)
	}
	t := backup.Target{Time: bs.TargetTimeValue()}
	plan, err := repo.Plan(t)
	if err != nil {
		return fmt.Errorf("bootstrap from stanza %s: %w", bs.Stanza, err)
	}
	req := plan.Request(bs.Stanza, p.cfg.Postgres.DataDir, "promote")
	p.log.Info("bootstrap: restoring a backup of another cluster", "stanza", bs.Stanza, "label", plan.Backup.Label, "target", plan.Describe())
	if err := os.MkdirAll(p.cfg.Postgres.DataDir, 0o700); err != nil {
		return err
	}
	if err := p.pb.Restore(ctx, req, progressLog(p.log, "bootstrap restore")); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if err := p.s.RecoverRestored(ctx); err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	p.log.Info("bootstrap: restored cluster recovered and promoted", "label", plan.Backup.Label)
	return nil
}

// CreateRoles: a cluster restored from a backup has the source's roles;
// they get the configured passwords.
func (p backupPG) CreateRoles(ctx context.Context) error {
	if p.cfg.Bootstrap.Method != "backup" {
		return p.pgAdapter.CreateRoles(ctx)
	}
	return p.s.SetRoles(ctx)
}

// Clone tries create_replica_methods in order: "backup" restores the
// newest backup of this cluster as a standby (it replays the archive, then
// streams from up), "basebackup" copies up with pg_basebackup.
func (p backupPG) Clone(ctx context.Context, up agent.Upstream) error {
	var errs []error
	for _, m := range p.cfg.Postgres.CreateReplicaMethods {
		if m == "basebackup" {
			return p.pgAdapter.Clone(ctx, up)
		}
		err := p.restoreReplica(ctx, up)
		if err == nil {
			return nil
		}
		p.log.Warn("replica not created from the repository: trying the next method", "error", err)
		errs = append(errs, err)
		if werr := p.s.Wipe(ctx); werr != nil {
			return errors.Join(append(errs, werr)...)
		}
	}
	return errors.Join(errs...)
}

func (p backupPG) restoreReplica(ctx context.Context, up agent.Upstream) error {
	repo, err := p.pb.ReadRepository(ctx, "")
	if err != nil {
		return fmt.Errorf("read the repository: %w", err)
	}
	newest, ok := repo.Info.Newest()
	if !ok {
		return errors.New("no backup in the repository yet")
	}
	if err := os.MkdirAll(p.cfg.Postgres.DataDir, 0o700); err != nil {
		return err
	}
	p.log.Info("creating the replica from the repository", "label", newest.Label, "source", up.Name)
	req := backup.RestoreRequest{DataDir: p.cfg.Postgres.DataDir, Set: newest.Label, Type: "standby"}
	if err := p.pb.Restore(ctx, req, progressLog(p.log, "replica restore")); err != nil {
		return err
	}
	if err := p.s.PrepareRestoredStandby(upstream(up)); err != nil {
		return err
	}
	p.log.Info("replica restored from the repository (no pg_basebackup): it replays the archive, then streams", "label", newest.Label, "source", up.Name)
	return nil
}

// progressLog logs a restore's progress every 10 %.
func progressLog(log hclog.Logger, what string) func(backup.Progress) {
	next := 10.0
	return func(p backup.Progress) {
		if p.Percent >= next {
			log.Info(what, "percent", p.Percent, "bytes", p.Bytes)
			for next <= p.Percent {
				next += 10
			}
		}
	}
}

// cmdArchivePush is archive_command (hidden): pgBackRest's archive-push,
// a timeline history file compared with the repository's copy first (see
// backup.PgBackRest.PushWAL).
func cmdArchivePush(e *env, args []string) error {
	fs := flags(e, "archive-push", "--pgbackrest-config FILE --stanza S PATH")
	conf := fs.String("pgbackrest-config", "", "this node's pgBackRest configuration")
	stanza := fs.String("stanza", "", "the cluster's scope")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *conf == "" || *stanza == "" {
		return fmt.Errorf("--pgbackrest-config, --stanza and one WAL file are required: %w", errUsage)
	}
	pb := backup.New(backup.Options{Stanza: *stanza, Dir: filepath.Dir(*conf)}, hclog.NewNullLogger())
	return pb.PushWAL(e.ctx, fs.Arg(0))
}

// backupKinds lists the kinds a user may ask for.
var backupKinds = strings.Join(slices.DeleteFunc(slices.Clone(backup.JobKinds), func(k string) bool { return k == "drill" }), "|")

func cmdBackup(e *env, args []string) error {
	subs := map[string]func(*env, []string) error{
		"create": cmdBackupCreate, "list": cmdBackupList, "verify": cmdBackupVerify, "restore": cmdBackupRestore,
		"expire": cmdBackupExpire, "drill": cmdBackupDrill,
	}
	if len(args) == 0 || subs[args[0]] == nil {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintln(e.stdout, backupUsage)
			return nil
		}
		return fmt.Errorf("want a subcommand: create, list, verify, restore, expire or drill: %w", errUsage)
	}
	return subs[args[0]](e, args[1:])
}

const backupUsage = `usage: pgwarden backup SUBCOMMAND [flags]

  create  -c FILE [--type full|diff|incr|logical]   a backup now, on the leader, with progress
  list    -c FILE [--format table|json]      base backups and logical dumps, how far each restores, why each is kept
  verify  -c FILE                            checksums, then WAL continuity from the oldest backup
  restore -c FILE --data-dir DIR [--target-time T | --target-lsn L | --latest] [--target-action pause|promote|shutdown] [--start] [--port N]
  restore -c FILE --logical STAMP --dsn DSN  a logical dump: globals, then every database, into the server DSN names
  expire  -c FILE [--dry-run]                apply the retention policy now, saying what goes and why
  drill   -c FILE                            a restore drill now, run by the leader on a healthy replica's host (its own when none): restore, start, check, remove`

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// lastBackup is the newest successful run recorded, for `pgwarden list`.
func lastBackup(runs map[string]dcs.BackupRun) string {
	var best *dcs.BackupRun
	for _, k := range slices.Sorted(mapKeys(runs)) {
		r := runs[k]
		if r.OK && (best == nil || r.Finished.After(best.Finished)) {
			best = &r
		}
	}
	if best == nil {
		return ""
	}
	return fmt.Sprintf("%s %s finished %s on %s (%s)", best.Kind, best.Label, best.Finished.Format(time.RFC3339), best.Member, humanBytes(best.Size))
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
