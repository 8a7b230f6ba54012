package dcs

import (
	"context"
	"errors"
	"time"

	"github.com/pgwarden/pgwarden/wal"
)

// Typed errors. Callers test them with errors.Is; etcd's own errors never
// cross this package's boundary unwrapped.
var (
	// ErrNotLeader: the leader key does not hold this member's name.
	ErrNotLeader = errors.New("dcs: not the leader")
	// ErrKeyModified: a compare-and-swap lost to a concurrent writer.
	ErrKeyModified = errors.New("dcs: key modified concurrently")
	// ErrLeaseExpired: this member's lease is gone; a new one is made on the
	// next Renew, and anything bound to the old one (leader key, member key)
	// was deleted by etcd.
	ErrLeaseExpired = errors.New("dcs: lease expired")
	// ErrUnavailable: etcd could not be reached or did not answer in time.
	ErrUnavailable = errors.New("dcs: etcd unavailable")
	// ErrLeaseInUse: the lease holds a key that cannot move with it now
	// (a running backup's lock, a bootstrap claim): its holder compares the
	// key's revision, which a move would change.
	ErrLeaseInUse = errors.New("dcs: lease holds a backup lock or bootstrap claim")
	// ErrUnsettled: a lease move's transaction got no answer; the keys may
	// be on either lease (the next Renew finds out and renews that one).
	// Without it, a failed move moved nothing.
	ErrUnsettled = errors.New("dcs: lease move unsettled")
	// ErrNotMoved: a lease move renewed the current lease and then could
	// not move the keys (etcd refused the new lease, or a read failed):
	// they stay, renewed, on the current one.
	ErrNotMoved = errors.New("dcs: lease renewed, keys not moved")
)

// Member is one node's record under members/<name>, bound to its lease.
type Member struct {
	Name    string `json:"name"`
	ConnURL string `json:"conn_url"` // postgres://host:port/postgres
	APIURL  string `json:"api_url"`  // http://host:port
	// Role is "primary", "replica" or "uninitialized".
	Role string `json:"role"`
	// State is the PostgreSQL state: running, starting, stopped, crashed, ...
	State    string `json:"state"`
	Timeline uint32 `json:"timeline,omitempty"`
	// History is the timeline history of Timeline (from its history file):
	// where each ancestor timeline ended.
	History []Fork `json:"history,omitempty"`
	// WALPosition is the current LSN on a primary, the received (or else
	// replayed) LSN on a replica.
	WALPosition wal.LSN `json:"wal_position,omitempty"`
	// ReplayedLSN is a replica's replayed position.
	ReplayedLSN wal.LSN           `json:"replayed_lsn,omitempty"`
	Streaming   bool              `json:"streaming,omitempty"`
	Priority    int               `json:"priority"`
	Tags        map[string]string `json:"tags,omitempty"`
	NoFailover  bool              `json:"nofailover,omitempty"`
	Version     string            `json:"version,omitempty"`
	// Pooler: this member manages a PgBouncer; PoolerPaused: its primary
	// databases are paused for a switchover in progress.
	Pooler       bool `json:"pooler,omitempty"`
	PoolerPaused bool `json:"pooler_paused,omitempty"`
	// Waiting is why this member does not take the leader key while there
	// is no leader (set only then).
	Waiting string `json:"waiting,omitempty"`
	// Error is the action that keeps failing on this member and its last
	// error ("" when the last action succeeded).
	Error string `json:"error,omitempty"`
	// PendingRestart: a changed parameter waits for a restart of this
	// member's PostgreSQL (informational: `list` shows it).
	PendingRestart bool `json:"pending_restart,omitempty"`
	// Revision is the key's ModRevision (not stored in the value).
	Revision int64 `json:"-"`
}

// Fork is one line of a timeline history file: where a timeline ended
// (wal.Fork, the type PostgreSQL's side reads it into).
type Fork = wal.Fork

// Leader is the holder of the leader key.
type Leader struct {
	Name     string
	Revision int64 // ModRevision of the leader key
	LeaseID  int64
}

// Failover is a pending switchover or failover request.
type Failover struct {
	// Kind is "switchover" or "failover".
	Kind string `json:"kind"`
	// Leader, when set, must be the current leader for the request to apply.
	Leader    string `json:"leader,omitempty"`
	Candidate string `json:"candidate,omitempty"`
	// ScheduledAt is when a scheduled switchover is due (zero: now).
	ScheduledAt time.Time `json:"scheduled_at,omitzero"`
	RequestedAt time.Time `json:"requested_at,omitzero"`
	Force       bool      `json:"force,omitempty"`
	// HandedOver: the leader of a switchover stopped cleanly and saw the
	// candidate receive everything up to its shutdown checkpoint before it
	// released the key (no other member can be ahead of the candidate).
	HandedOver bool `json:"handed_over,omitempty"`
	// Requested is what the operator asked for when it differs from Kind:
	// "failover" for a manual failover that a healthy leader carries out
	// as a switchover (the history records what was asked).
	Requested string `json:"requested,omitempty"`
	// Source is who asked (logged by the members that carry it out).
	Source string `json:"source,omitempty"`
	// Revision is the key's ModRevision (not stored in the value).
	Revision int64 `json:"-"`
}

// Sync says which members are synchronous standbys of which leader.
type Sync struct {
	Leader      string   `json:"leader"`
	SyncStandby []string `json:"sync_standby"`
	Revision    int64    `json:"-"`
}

// HistoryEntry records one change of timeline: Timeline began at LSN,
// where Parent ended.
type HistoryEntry struct {
	Timeline  uint32    `json:"timeline"`
	LSN       wal.LSN   `json:"lsn"`
	Parent    uint32    `json:"parent,omitempty"`
	Reason    string    `json:"reason"`
	Time      time.Time `json:"time"`
	NewLeader string    `json:"new_leader"`
	// Pending: recorded by a leader about to promote, so no other node
	// reuses the timeline ID; replaced once the promotion is done (a
	// failed promotion leaves it: the ID stays taken).
	Pending bool `json:"pending,omitempty"`
}

// RecordHistory adds h to hist, replacing a pending entry of its timeline.
func RecordHistory(hist []HistoryEntry, h HistoryEntry) []HistoryEntry {
	for i, e := range hist {
		if e.Timeline == h.Timeline && e.Pending {
			hist[i] = h
			return hist
		}
	}
	return append(hist, h)
}

// Status is the leader's last reported WAL position, and who reported it
// where: after the leader key is gone, candidates check directly that this
// server no longer runs as a primary.
type Status struct {
	LSN     wal.LSN   `json:"lsn"`
	Time    time.Time `json:"time,omitzero"`
	Leader  string    `json:"leader,omitempty"`
	ConnURL string    `json:"conn_url,omitempty"`
}

// BackupLock is the base backup running in the cluster: one at a time,
// whichever member leads. Its key is bound to the runner's lease, so a
// runner that dies releases it within the ttl.
type BackupLock struct {
	Member  string    `json:"member"`
	ID      string    `json:"id"`
	Type    string    `json:"type"`
	Started time.Time `json:"started"`
	// Percent and Bytes are the run's progress, as last written.
	Percent  float64 `json:"percent"`
	Bytes    int64   `json:"bytes"`
	Revision int64   `json:"-"`
}

// BackupRun is how the last run of one kind ended.
type BackupRun struct {
	Kind     string    `json:"kind"`
	ID       string    `json:"id"`
	Member   string    `json:"member"`
	Label    string    `json:"label,omitempty"`
	OK       bool      `json:"ok"`
	Error    string    `json:"error,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Size     int64     `json:"size,omitempty"`
	// Details is what the run found (a drill's checks).
	Details string `json:"details,omitempty"`
	// LastSuccess is when a run of this kind last succeeded: kept from
	// the stored record when this run failed.
	LastSuccess time.Time `json:"last_success,omitzero"`
	// Schedule is how far the schedule of this kind has got. It belongs to
	// the kind, not to this run: RecordBackupRun keeps it as stored, and
	// only UpdateBackupSlot changes it.
	Schedule *BackupSlot `json:"schedule,omitempty"`
}

// BackupSlot is the newest slot of a kind's schedule that a leader claimed,
// and whether its run ended (successfully or not). A claimed slot that is
// not done is owed: its run was stopped (a leader change) or never began,
// and the next leader runs it.
type BackupSlot struct {
	Slot time.Time `json:"slot"`
	Done bool      `json:"done"`
	// Member is who claimed it; OK and Error how its run ended.
	Member string `json:"member"`
	OK     bool   `json:"ok,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Same reports whether s and o are the same state (nil is no state yet).
func (s *BackupSlot) Same(o *BackupSlot) bool {
	if s == nil || o == nil {
		return s == nil && o == nil
	}
	return s.Slot.Equal(o.Slot) && s.Done == o.Done && s.Member == o.Member
}

// Cluster is everything under the cluster's prefix, read at one revision.
type Cluster struct {
	// Initialize is the cluster's system identifier in decimal; "" when no
	// one has won the initialize race yet, "pending" style values are
	// whatever the winner wrote first.
	Initialize         string
	InitializeRevision int64
	// Config is the dynamic configuration as stored (JSON); nil when absent.
	Config         []byte
	ConfigRevision int64
	Leader         *Leader
	// Members sorted by name.
	Members  []Member
	Failover *Failover
	Sync     *Sync
	History  []HistoryEntry
	Status   Status
	// Failsafe is the member list the leader published for failsafe_mode.
	Failsafe []string
	// BackupLock is the base backup running now (nil: none).
	BackupLock *BackupLock
	// BackupRuns is the last run of each backup kind, by kind.
	BackupRuns map[string]BackupRun
	// Revision is the store revision this view was read at.
	Revision int64
}

// Member returns the named member, or nil.
func (c *Cluster) Member(name string) *Member {
	if c == nil {
		return nil
	}
	for i := range c.Members {
		if c.Members[i].Name == name {
			return &c.Members[i]
		}
	}
	return nil
}

// Store is what both implementations (Etcd and Memory) offer; the behavioural
// test suite runs against this interface. Consumers declare the narrower
// interfaces they need.
type Store interface {
	// Cluster reads every key of the cluster at one revision.
	Cluster(ctx context.Context) (*Cluster, error)
	// Renew keeps this member's lease alive (creating it when there is none)
	// and returns its remaining TTL as etcd reports it. ErrLeaseExpired when
	// the lease was gone: the caller lost whatever was bound to it.
	Renew(ctx context.Context) (time.Duration, error)
	// AcquireLeader creates the leader key with this member's name, bound to
	// its lease, only if the key does not exist. It reports whether it won.
	AcquireLeader(ctx context.Context) (bool, error)
	// UpdateLeader checks that the leader key still holds this member's name
	// (ErrNotLeader otherwise); the lease itself is kept alive by Renew.
	UpdateLeader(ctx context.Context) error
	// ReleaseLeader deletes the leader key only if it holds this member's
	// name (ErrNotLeader otherwise).
	ReleaseLeader(ctx context.Context) error
	// TouchMember writes this member's record, bound to its lease.
	TouchMember(ctx context.Context, m Member) error
	// DeleteMember removes this member's record.
	DeleteMember(ctx context.Context) error
	// Initialize writes the initialize key if absent; it returns the key's
	// revision when this call created it, 0 when another holds it. With sysid "" it is a bootstrap claim, bound to this
	// member's lease until SetInitialize records the system identifier: a
	// winner that dies while creating the cluster does not leave the race
	// closed for ever.
	Initialize(ctx context.Context, sysid string) (int64, error)
	// SetInitialize overwrites the initialize key only at prevRevision (used
	// by the bootstrap winner to record the real system identifier).
	SetInitialize(ctx context.Context, sysid string, prevRevision int64) error
	// CancelInitialize deletes the initialize key (failed bootstrap) if it
	// still has revision prevRevision.
	CancelInitialize(ctx context.Context, prevRevision int64) error
	// SetConfig writes the dynamic configuration if its ModRevision is still
	// prevRevision (0: only if absent); ErrKeyModified otherwise.
	SetConfig(ctx context.Context, raw []byte, prevRevision int64) error
	// SetFailover writes a failover request if the key's ModRevision is
	// prevRevision (0: only if absent); ErrKeyModified otherwise.
	SetFailover(ctx context.Context, f Failover, prevRevision int64) error
	// DeleteFailover deletes the failover key if its ModRevision is
	// prevRevision (0: whatever it holds).
	DeleteFailover(ctx context.Context, prevRevision int64) error
	// SetSync writes the sync key if its ModRevision is prevRevision.
	SetSync(ctx context.Context, s Sync, prevRevision int64) error
	// AppendHistory adds an entry to the timeline history (replacing a
	// pending entry of the same timeline).
	AppendHistory(ctx context.Context, e HistoryEntry) error
	// SetFailsafe records the members a failsafe round must be confirmed
	// by, only while this member holds the leader key (ErrNotLeader).
	SetFailsafe(ctx context.Context, members []string) error
	// SetStatus records the leader's last WAL position, only while this
	// member holds the leader key (ErrNotLeader otherwise).
	SetStatus(ctx context.Context, s Status) error
	// Watch signals (coalesced, never blocking the store) whenever any key
	// under the cluster prefix changes or expires, until ctx ends. Writes
	// of the status key do not signal: the leader writes it every loop, and
	// waking on its own write would spin its loop.
	Watch(ctx context.Context) <-chan struct{}
	// MoveLease makes this member's lease one of ttl: etcd fixes a lease's
	// TTL when it grants it, so a new lease is granted, the keys bound to
	// the current one (the member key, the leader key while this member
	// holds it) are moved onto it in one transaction that compares each
	// key's revision, lease and (the leader key) value, so a key lost
	// meanwhile is neither stolen back nor resurrected, and the old lease
	// is revoked. It returns the new lease's TTL as etcd granted it; later
	// grants (after an expiry) use ttl too. With no lease yet it grants one,
	// as Renew does. On error the current lease stays: ErrKeyModified (a
	// key changed meanwhile), ErrLeaseExpired (the current lease is gone),
	// ErrLeaseInUse (it holds a key that must not move now), ErrUnavailable
	// (with ErrUnsettled when the keys may have moved all the same).
	MoveLease(ctx context.Context, ttl time.Duration) (time.Duration, error)
	// Close revokes this member's lease (deleting what is bound to it) and
	// releases resources.
	Close(ctx context.Context) error

	// AcquireBackupLock creates backup/lock with l, bound to this member's
	// lease, only if no backup holds it (ErrKeyModified otherwise); it
	// returns the key's revision.
	AcquireBackupLock(ctx context.Context, l BackupLock) (int64, error)
	// UpdateBackupLock rewrites the lock (its progress) only while it is
	// still at rev, keeping its lease; ErrKeyModified when it is gone (its
	// lease expired) or was taken over.
	UpdateBackupLock(ctx context.Context, l BackupLock, rev int64) (int64, error)
	// ReleaseBackupLock deletes the lock if it is still at rev.
	ReleaseBackupLock(ctx context.Context, rev int64) error
	// RecordBackupRun stores r as the last run of its kind (its Schedule
	// is ignored: the stored one stays).
	RecordBackupRun(ctx context.Context, r BackupRun) error
	// UpdateBackupSlot sets the schedule state of kind to next only if it
	// is still prev (nil: none yet); ErrKeyModified otherwise, so two
	// leaders never both claim a slot.
	UpdateBackupSlot(ctx context.Context, kind string, prev *BackupSlot, next BackupSlot) error
}

// SetSlot is UpdateBackupSlot's compare and set on the decoded runs, for
// every Store.
func SetSlot(runs map[string]BackupRun, kind string, prev *BackupSlot, next BackupSlot) error {
	r := runs[kind]
	if !r.Schedule.Same(prev) {
		return ErrKeyModified
	}
	r.Kind, r.Schedule = kind, &next
	runs[kind] = r
	return nil
}

// PutRun stores r as the last run of its kind, keeping what belongs to the
// kind: its schedule state, and its last success when r failed.
func PutRun(runs map[string]BackupRun, r BackupRun) {
	old := runs[r.Kind]
	r.Schedule = old.Schedule
	switch {
	case !r.OK:
		r.LastSuccess = old.LastSuccess
	case r.LastSuccess.IsZero():
		r.LastSuccess = r.Finished
	}
	runs[r.Kind] = r
}

// Fresh reads the cluster as the store has it now. A store whose Cluster
// may answer from a watch-kept view (etcd.Store) offers ClusterFresh; the
// in-memory one is always current. For requests checked against another
// member's latest write (an operator's switchover, a leader's drill).
func Fresh(ctx context.Context, s interface {
	Cluster(ctx context.Context) (*Cluster, error)
}) (*Cluster, error) {
	if f, ok := s.(interface {
		ClusterFresh(ctx context.Context) (*Cluster, error)
	}); ok {
		return f.ClusterFresh(ctx)
	}
	return s.Cluster(ctx)
}
