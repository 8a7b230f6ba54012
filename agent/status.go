package agent

import (
	"errors"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/postgres/pgstate"
	"github.com/pgwarden/pgwarden/wal"
)

// Status is the snapshot of this node that the HA loop publishes after every
// iteration (and the REST health checks read without any I/O of their own).
// A published Status is never modified: the loop swaps in a new one.
type Status struct {
	Name  string
	Scope string
	// Role is "primary", "replica", "uninitialized" or "" (unknown).
	Role string
	// State is PostgreSQL's state: "running", "starting", "stopped",
	// "crashed", "stopping", "restarting", "rewinding", "cloning", ...
	State string
	// IsLeader: this node holds the leader key.
	IsLeader bool
	// Running: a postmaster of this data directory is alive.
	Running bool
	// Answering: it answered the agent's status query, so the role and
	// positions are current. A primary that runs but does not answer is
	// not vouched for by health checks.
	Answering bool
	// PostmasterPID is the running postmaster (0: none).
	PostmasterPID int
	// InRecovery: PostgreSQL is a standby.
	InRecovery bool
	// Streaming: the WAL receiver is streaming from Upstream.
	Streaming bool
	Upstream  string
	Timeline  uint32
	// WALPosition: current LSN on a primary; received LSN on a replica.
	WALPosition wal.LSN
	ReceivedLSN wal.LSN
	ReplayedLSN wal.LSN
	// LeaderLSN is the leader's last WAL position as the DCS reports it;
	// replica lag = LeaderLSN - ReplayedLSN.
	LeaderLSN wal.LSN
	// Synchronous: this replica is a synchronous standby.
	Synchronous bool
	SyncMode    bool
	// FailsafeMode: failsafe_mode as this agent last read it.
	FailsafeMode    bool
	Priority        int
	NoFailover      bool
	NoLoadBalance   bool
	Tags            map[string]string
	Pause           bool
	ClusterUnlocked bool
	Leader          string
	ServerVersion   int
	SystemID        string
	// ReplicationConns are the standbys connected to this primary.
	ReplicationConns int
	// WALSenders are those standbys, as pg_stat_replication shows them.
	WALSenders []WALSender
	// PendingRestart: a changed parameter waits for a restart.
	PendingRestart  bool
	PostmasterStart time.Time
	// LastLoop is when the HA loop last completed; LoopDuration how long it took.
	LastLoop     time.Time
	LoopDuration time.Duration
	TTL          time.Duration
	LoopWait     time.Duration
	// LastDCSContact is when etcd last answered.
	LastDCSContact time.Time
	// Action and Reason are the last decision.
	Action string
	Reason string
	// Pooler is the PgBouncer state ("", "ok", "error: ...").
	Pooler string
	// Unguarded says why the watchdog cannot fence this node ("" when it
	// can or none is configured).
	Unguarded string
	// Failing is the action that keeps failing ("" when none), with its
	// last error, how many times in a row and since when.
	Failing      string
	LastError    string
	Failures     int
	FailingSince time.Time
	// Counters since the agent started.
	LeaseRenewals  uint64
	LeaseFailures  uint64
	Failovers      uint64
	DCSClusterView *dcs.Cluster
}

// WALSender is a standby streaming from this server.
type WALSender = pgstate.Sender

// Lag is how far this replica's replay is behind the leader's last WAL
// position, in bytes (0 when ahead or unknown).
func (s *Status) Lag() uint64 { return dcs.Behind(s.LeaderLSN, s.ReplayedLSN) }

// Errors that cross into rest and cmd, mapped there to status codes and exit
// codes. Wrap them with the reason: fmt.Errorf("%w: candidate %s is not
// streaming", ErrPrecondition, name).
var (
	// ErrBadRequest: the request itself is malformed (400).
	ErrBadRequest = errors.New("bad request")
	// ErrPrecondition: the request is well formed but impossible now (412).
	ErrPrecondition = errors.New("precondition failed")
	// ErrNotCompleted: the action was started but did not complete in time (503).
	ErrNotCompleted = errors.New("not completed")
	// ErrCannotRewind: pg_rewind cannot make this data directory fit to
	// follow (only then is it re-cloned; an unreachable source is not
	// this).
	ErrCannotRewind = errors.New("cannot rewind")
)
