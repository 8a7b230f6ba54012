package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/postgres"
	"github.com/pgwarden/pgwarden/wal"
)

// pgAdapter is the local PostgreSQL as package agent sees it: the postgres
// package knows nothing of the agent's types, so the translation lives here.
type pgAdapter struct {
	s *postgres.Server
}

var _ agent.Postgres = pgAdapter{}

func newPostgres(cfg *config.Config, log hclog.Logger) pgAdapter {
	return pgAdapter{s: postgres.New(postgres.Config{
		BinDir:        cfg.Postgres.BinDir,
		DataDir:       cfg.Postgres.DataDir,
		Listen:        cfg.Postgres.Listen,
		SuperUser:     cfg.Postgres.Superuser.Username,
		SuperPassword: cfg.Postgres.Superuser.Password,
		ReplUser:      cfg.Postgres.Replication.Username,
		ReplPassword:  cfg.Postgres.Replication.Password,
		Parameters:    cfg.Postgres.Parameters,
		PgHBA:         cfg.Postgres.PgHBA,
		AppName:       cfg.Name,
		Archive:       archiveSettings(cfg),
		TLS:           pgTLS(cfg),
	}, log)}
}

// poolerLocal is where this node's PgBouncer reaches its own server
// ("local" entries): postgres.listen, but connect_address when the server
// is verified (verify-full) and listen is a wildcard, which no certificate
// names.
func poolerLocal(cfg *config.Config) string {
	host, _, err := net.SplitHostPort(cfg.Postgres.Listen)
	if ip := net.ParseIP(host); err == nil && ip != nil && ip.IsUnspecified() && config.SSLMode(cfg.Postgres.TLS) == "verify-full" {
		return cfg.Postgres.ConnectAddress
	}
	return cfg.Postgres.Listen
}

// pgTLS is postgres.tls as the postgres package takes it (nil without).
func pgTLS(cfg *config.Config) *postgres.TLS {
	t := cfg.Postgres.TLS
	if t == nil {
		return nil
	}
	host, _, _ := net.SplitHostPort(cfg.Postgres.ConnectAddress)
	return &postgres.TLS{CertFile: t.Cert, KeyFile: t.Key, CAFile: t.CA, SSLMode: config.SSLMode(t), ServerName: host}
}

func (p pgAdapter) State(ctx context.Context) (agent.PGState, error) {
	return p.s.Status(ctx)
}

// upstream translates; an empty host (a standby with no upstream yet)
// stays empty.
func upstream(up agent.Upstream) postgres.Upstream {
	return postgres.Upstream{Host: up.Host, Port: up.Port, Slot: up.Slot}
}

func (p pgAdapter) Bootstrap(ctx context.Context) error   { return p.s.InitDB(ctx) }
func (p pgAdapter) CreateRoles(ctx context.Context) error { return p.s.CreateRoles(ctx) }

func (p pgAdapter) Start(ctx context.Context, up *agent.Upstream) error {
	if up == nil {
		return p.s.Start(ctx, nil)
	}
	u := upstream(*up)
	return p.s.Start(ctx, &u)
}

func (p pgAdapter) Stop(ctx context.Context, mode agent.StopMode) error {
	return p.s.Stop(ctx, string(mode))
}

func (p pgAdapter) Fence(ctx context.Context) error   { return p.s.Fence(ctx) }
func (p pgAdapter) Restart(ctx context.Context) error { return p.s.Restart(ctx) }
func (p pgAdapter) Reload(ctx context.Context) error  { return p.s.Reload(ctx) }
func (p pgAdapter) SetClusterParameters(ctx context.Context, params map[string]string) (bool, error) {
	return p.s.SetClusterParameters(ctx, params)
}
func (p pgAdapter) Promote(ctx context.Context) error { return p.s.Promote(ctx) }

// Probe implements agent.Probe.
func (p pgAdapter) Probe(ctx context.Context, hostPort string) agent.ProbeResult {
	switch p.s.Probe(ctx, hostPort) {
	case postgres.RolePrimary:
		return agent.ProbePrimary
	case postgres.RoleStandby:
		return agent.ProbeStandby
	case postgres.RoleRunning:
		return agent.ProbeRunning
	}
	return agent.ProbeNoAnswer
}
func (p pgAdapter) ReserveTimelines(ctx context.Context, upTo uint32) error {
	return p.s.ReserveTimelines(ctx, upTo)
}
func (p pgAdapter) Follow(ctx context.Context, up agent.Upstream) error {
	return p.s.Follow(ctx, upstream(up))
}
func (p pgAdapter) Clone(ctx context.Context, up agent.Upstream) error {
	return p.s.Clone(ctx, upstream(up))
}
func (p pgAdapter) Rewind(ctx context.Context, up agent.Upstream) error {
	err := p.s.Rewind(ctx, upstream(up))
	if errors.Is(err, postgres.ErrRewindImpossible) {
		return fmt.Errorf("%w: %v", agent.ErrCannotRewind, err)
	}
	return err
}
func (p pgAdapter) Wipe(ctx context.Context) error       { return p.s.Wipe(ctx) }
func (p pgAdapter) Checkpoint(ctx context.Context) error { return p.s.Checkpoint(ctx) }
func (p pgAdapter) ShutdownCheckpoint(ctx context.Context) (wal.LSN, error) {
	return p.s.HandoverLSN(ctx)
}
func (p pgAdapter) SyncSlots(ctx context.Context, want, keep []string) ([]string, []string, error) {
	return p.s.SyncSlots(ctx, want, keep)
}

func (p pgAdapter) SetSyncStandbys(ctx context.Context, names []string) error {
	if len(names) == 1 && names[0] == agent.AnyStandby {
		names = []string{postgres.AnyStandby}
	}
	return p.s.SetSyncStandbys(ctx, names)
}

func (p pgAdapter) SyncStatus(ctx context.Context) (agent.SyncStatus, error) {
	st, err := p.s.SyncStatus(ctx)
	return agent.SyncStatus{Current: st.Current, Sync: st.Sync, Streaming: st.Streaming}, err
}
