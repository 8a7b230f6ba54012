package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/backup"
	"github.com/pgwarden/pgwarden/config"
)

// scheduledJobs fills in what the leader's manager needs for schedules,
// retention, logical dumps and drills. The configuration was validated:
// schedules parse and the time zone loads.
func scheduledJobs(cfg *config.Config, pb *backup.PgBackRest, mc *backup.ManagerConfig, log hclog.Logger) error {
	b := cfg.Backup
	loc, err := backupLocation(b)
	if err != nil {
		return err
	}
	mc.Location = loc
	mc.Policy = backupPolicy(b)
	mc.Expirer = pb
	if mc.Schedules, err = parseSchedules(b); err != nil {
		return err
	}
	mc.Dumper = dumper(cfg, log)
	mc.Driller = driller(cfg, pb, filepath.Clean(cfg.Postgres.DataDir)+".drill", log)
	return nil
}

// parseSchedules reads backup.schedule (checked by Validate: an error here
// names the key anyway).
func parseSchedules(b *config.Backup) (map[string]backup.Cron, error) {
	out := map[string]backup.Cron{}
	for kind, spec := range b.Schedule {
		c, err := config.ParseCron(spec)
		if err != nil {
			return nil, fmt.Errorf("backup.schedule.%s: %q: %w", kind, spec, err)
		}
		out[kind] = c
	}
	return out, nil
}

func backupLocation(b *config.Backup) (*time.Location, error) {
	if b.Timezone == "" {
		return time.Local, nil
	}
	loc, err := time.LoadLocation(b.Timezone)
	if err != nil {
		return nil, fmt.Errorf("backup.timezone: %q: %w", b.Timezone, err)
	}
	return loc, nil
}

func backupPolicy(b *config.Backup) backup.Policy {
	r := b.Retention
	return backup.Policy{Daily: r.Daily, Weekly: r.Weekly, Monthly: r.Monthly, Yearly: r.Yearly}
}

// dumpsRoot is where the cluster's logical dumps go; "" with an object
// store (dumps are written to a directory).
func dumpsRoot(cfg *config.Config) string {
	if cfg.Backup.Repository == "" {
		return ""
	}
	return filepath.Join(cfg.Backup.Repository, "logical", cfg.Scope)
}

func superLogin(cfg *config.Config) backup.Login {
	return backup.Login{User: cfg.Postgres.Superuser.Username, Password: cfg.Postgres.Superuser.Password}
}

func dumper(cfg *config.Config, log hclog.Logger) *backup.Dumper {
	root := dumpsRoot(cfg)
	if root == "" {
		return nil
	}
	return &backup.Dumper{BinDir: cfg.Postgres.BinDir, Root: root, Scope: cfg.Scope, Login: superLogin(cfg), Log: log.Named("logical")}
}

func driller(cfg *config.Config, pb *backup.PgBackRest, scratch string, log hclog.Logger) *backup.Driller {
	return &backup.Driller{Engine: pb, BinDir: cfg.Postgres.BinDir, Scratch: scratch, Login: superLogin(cfg),
		Parameters: cfg.Postgres.Parameters, TLS: pgTLS(cfg), Dumps: dumpsRoot(cfg), Log: log.Named("drill")}
}
