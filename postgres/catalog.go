package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Reads on a server the caller connected to itself: the source of a logical
// dump, the target of its restore, a drill's or a restore's copy. The
// statements are in sql.go with the agent's own.

// Querier is what these reads need of a connection (a *pgx.Conn).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// InRecovery says whether the server is still in recovery.
func InRecovery(ctx context.Context, q Querier) (bool, error) {
	var rec bool
	err := q.QueryRow(ctx, sqlInRecovery).Scan(&rec)
	return rec, err
}

// ReplayPaused says whether the server is in recovery and, if so, whether
// its replay is paused (at a recovery target, or by pg_wal_replay_pause).
func ReplayPaused(ctx context.Context, q Querier) (inRecovery, paused bool, err error) {
	var state string
	if err := q.QueryRow(ctx, sqlReplayPause).Scan(&inRecovery, &state); err != nil {
		return false, false, err
	}
	return inRecovery, state == "paused", nil
}

// CurrentLSN is a primary's current WAL position, as PostgreSQL writes it.
func CurrentLSN(ctx context.Context, q Querier) (string, error) {
	var lsn string
	err := q.QueryRow(ctx, sqlCurrentLSN).Scan(&lsn)
	return lsn, err
}

// VersionAndPosition is the server's version and its WAL position (on a
// replica, what it replayed), as PostgreSQL writes them.
func VersionAndPosition(ctx context.Context, q Querier) (version, lsn string, err error) {
	err = q.QueryRow(ctx, sqlVersionPosition).Scan(&version, &lsn)
	return version, lsn, err
}

// Databases are the server's databases that accept connections, templates
// left out, by name.
func Databases(ctx context.Context, q Querier) ([]string, error) {
	rows, err := q.Query(ctx, sqlDatabases)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// DatabaseExists says whether the server has a database called name.
func DatabaseExists(ctx context.Context, q Querier, name string) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, sqlDatabaseExists, name).Scan(&ok)
	return ok, err
}
