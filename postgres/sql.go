package postgres

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Every statement the agent sends to PostgreSQL is here, so a reviewer
// reads the agent's whole footprint on the server in one file, and an
// expression used twice (the primary's timeline) is written once. The
// catalog reads backup and the CLI make on a server they connected to
// themselves (catalog.go) are here too; a drill's read of every table is
// backup's own (backup/sql.go). An operator's own SQL (`pgwarden query`,
// query.go) is not the agent's.

// sqlPrimaryTimeline is a primary's current timeline: the first 8 hex
// digits of the WAL file it writes (pg_control_checkpoint() lags until the
// first checkpoint after a promotion).
const sqlPrimaryTimeline = `('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint`

// sqlStatus is the one status query of each loop (Status).
const sqlStatus = `SELECT pg_is_in_recovery(),
 CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_current_wal_lsn()::text END,
 COALESCE(pg_last_wal_receive_lsn()::text, ''),
 COALESCE(pg_last_wal_replay_lsn()::text, ''),
 CASE WHEN pg_is_in_recovery() THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint()))
      ELSE ` + sqlPrimaryTimeline + ` END,
 COALESCE((SELECT status FROM pg_stat_wal_receiver), ''),
 (SELECT system_identifier::text FROM pg_control_system()),
 current_setting('server_version_num')::int,
 (SELECT count(*) FROM pg_stat_replication),
 current_setting('primary_conninfo'),
 (SELECT count(*) > 0 FROM pg_settings WHERE pending_restart),
 COALESCE((SELECT json_agg(json_build_object('application_name', application_name, 'client_addr', COALESCE(host(client_addr), ''),
   'state', state, 'sync_state', sync_state) ORDER BY application_name)::text FROM pg_stat_replication), '[]')`

// sqlStaleTimeline: a new primary whose last checkpoint predates its
// promotion (pg_rewind from it would read the old timeline).
const sqlStaleTimeline = `SELECT NOT pg_is_in_recovery() AND (SELECT timeline_id FROM pg_control_checkpoint()) <> ` + sqlPrimaryTimeline

const (
	sqlInRecovery       = "SELECT pg_is_in_recovery()"
	sqlPromote          = "SELECT pg_promote(true, 60)"
	sqlCheckpoint       = "CHECKPOINT"
	sqlPhysicalSlots    = "SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical'"
	sqlSyncStandbyNames = "SELECT setting FROM pg_settings WHERE name = 'synchronous_standby_names'"
	sqlReadFile         = "SELECT pg_read_file($1)"
	sqlIdentifySystem   = "IDENTIFY_SYSTEM" // on a replication connection
	sqlArchiver         = `SELECT archived_count, coalesce(last_archived_wal, ''), last_archived_time,
 failed_count, coalesce(last_failed_wal, ''), last_failed_time FROM pg_stat_archiver`
	// sqlSyncStatus: the primary's position and, per standby streaming
	// from it, how far it flushed (one row with NULLs when none streams).
	sqlSyncStatus = `SELECT pg_current_wal_lsn()::text, coalesce(application_name, ''), coalesce(flush_lsn::text, ''),
 coalesce(r.state, ''), coalesce(r.sync_state, '')
 FROM (SELECT 1) one LEFT JOIN pg_stat_replication r ON true`
)

// The catalog reads of catalog.go.
const (
	sqlCurrentLSN     = "SELECT pg_current_wal_lsn()::text"
	sqlDatabases      = "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname"
	sqlDatabaseExists = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)"
	sqlReplayPause    = "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END"
	// sqlVersionPosition: a replica's position is what it replayed.
	sqlVersionPosition = `SELECT current_setting('server_version'),
		CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text`
)

func sqlCreateSlot(name string) string {
	return "SELECT pg_create_physical_replication_slot(" + sqlQuote(name) + ", true)"
}

func sqlDropSlot(name string) string {
	return "SELECT pg_drop_replication_slot(" + sqlQuote(name) + ")"
}

// Roles get a SCRAM-SHA-256 verifier the agent computed (scram.go), never
// the password itself: a statement log shows only the verifier.

func sqlCreateReplicationRole(user, verifier string) string {
	return fmt.Sprintf("CREATE ROLE %s WITH REPLICATION LOGIN PASSWORD %s", pgx.Identifier{user}.Sanitize(), sqlQuote(verifier))
}

func sqlSetPassword(user, verifier string) string {
	return fmt.Sprintf("ALTER ROLE %s WITH PASSWORD %s", pgx.Identifier{user}.Sanitize(), sqlQuote(verifier))
}

// sqlEnsureReplicationRole creates user if it is missing and makes it the
// replication login with verifier (a cluster restored from a backup of
// another cluster may lack it, or know it by another password).
func sqlEnsureReplicationRole(user, verifier string) []string {
	id := pgx.Identifier{user}.Sanitize()
	return []string{
		fmt.Sprintf(`DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s) THEN CREATE ROLE %s; END IF; END$$`, sqlQuote(user), id),
		fmt.Sprintf("ALTER ROLE %s WITH REPLICATION LOGIN PASSWORD %s", id, sqlQuote(verifier)),
	}
}

func sqlQuote(v string) string { return "'" + strings.ReplaceAll(v, "'", "''") + "'" }
