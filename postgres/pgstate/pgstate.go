// Package pgstate is what the local PostgreSQL server looks like at one
// moment: the postgres package fills it in, the agent decides on it. It
// links nothing but the WAL types, so the agent reads a server's state
// without linking the package (and the driver) that asks the server.
package pgstate

import (
	"time"

	"github.com/pgwarden/pgwarden/wal"
)

// Server is the local server at one moment.
type Server struct {
	// DataEmpty: the data directory does not exist or holds no cluster.
	DataEmpty bool
	// Running: a postmaster of this data directory is alive (its pid file
	// names a living, non-zombie process working in the directory),
	// whether or not it answers. A server that does not answer the agent
	// (all connection slots taken, a pg_hba change, a hung query) still
	// runs, and may still accept writes from the sessions it has.
	Running bool
	// Answering: the status query succeeded, so InRecovery and the
	// positions below are current.
	Answering bool
	// State is "running" (answering), "starting", "stopping",
	// "unresponsive" (running, not answering), "stopped" or "crashed".
	State string
	// InRecovery: the server is a standby. When it does not answer, what
	// its files say: standby.signal, or the postmaster's "standby" status.
	InRecovery bool
	Timeline   uint32
	// History is the timeline history of Timeline: where each ancestor
	// timeline ended (nil on timeline 1, or when it could not be read).
	History []wal.Fork
	// WAL is pg_current_wal_lsn() on a primary, max(received, replayed) on
	// a standby: what it would have after promotion.
	WAL                wal.LSN
	Received, Replayed wal.LSN
	Streaming          bool
	// Upstream is host:port of the primary the WAL receiver is configured
	// for (primary_conninfo; "" when none).
	Upstream string
	SystemID string
	// WasPrimary: a stopped data directory was last a primary (its control
	// file says "shut down" or "in production"), so following another node
	// may need pg_rewind first.
	WasPrimary       bool
	ServerVersion    int
	ReplicationConns int
	// WALSenders are the standbys streaming from this server
	// (pg_stat_replication), by application name.
	WALSenders []Sender
	// PendingRestart: a changed parameter takes effect only after a
	// restart (pg_settings.pending_restart).
	PendingRestart bool
	// PostmasterPID is the running postmaster (0 when none), started at
	// PostmasterStart.
	PostmasterPID   int
	PostmasterStart time.Time
	// Orphans: with no postmaster, processes of the data directory still
	// run (a busy backend outlives a killed postmaster and may commit).
	Orphans bool
}

// Writable says whether this server is known to accept writes: it runs,
// answers, and is not in recovery.
func (s Server) Writable() bool { return s.Running && s.Answering && !s.InRecovery }

// MayWrite says whether this server could accept writes: it runs and is
// not known to be a standby. A primary that does not answer may write.
// Fencing and the watchdog go by this, never by Writable.
func (s Server) MayWrite() bool { return (s.Running && !s.InRecovery) || s.Orphans }

// Standby: a running standby that answers (its positions are current).
func (s Server) Standby() bool { return s.Running && s.Answering && s.InRecovery }

// Mute: running but not answering (starting, stopping, or unresponsive).
func (s Server) Mute() bool { return s.Running && !s.Answering }

// Sender is one row of pg_stat_replication: a standby streaming from this
// server.
type Sender struct {
	ApplicationName string `json:"application_name"`
	ClientAddr      string `json:"client_addr"`
	State           string `json:"state"`
	SyncState       string `json:"sync_state"`
}
