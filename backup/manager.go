package backup

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/postgres"
)

// errNotLeading: base backups run on the leader's primary only (the
// scheduler skips a slot on it; rest answers it 503, as any other refusal).
var errNotLeading = errors.New("this member does not lead the cluster")

// Errors that cross into rest and cmd.
var (
	// ErrRunning: a backup runs already (one at a time in the cluster).
	ErrRunning = errors.New("a backup is already running")
	// ErrBadKind: not full, diff, incr, logical or drill.
	ErrBadKind = errors.New("unknown backup type")
	// ErrNotConfigured: logical dumps or drills lack what they need here.
	ErrNotConfigured = errors.New("not configured on this member")
)

// Lock is the part of the cluster store a Manager uses: the cluster-wide
// backup lock, bound to this agent's lease, and the record of runs.
type Lock interface {
	Cluster(ctx context.Context) (*dcs.Cluster, error)
	AcquireBackupLock(ctx context.Context, l dcs.BackupLock) (int64, error)
	UpdateBackupLock(ctx context.Context, l dcs.BackupLock, rev int64) (int64, error)
	ReleaseBackupLock(ctx context.Context, rev int64) error
	RecordBackupRun(ctx context.Context, r dcs.BackupRun) error
	UpdateBackupSlot(ctx context.Context, kind string, prev *dcs.BackupSlot, next dcs.BackupSlot) error
}

// Engine is pgBackRest as a Manager drives it (*PgBackRest).
type Engine interface {
	Options() Options
	StanzaCreate(ctx context.Context) error
	Check(ctx context.Context) error
	PushMissing(ctx context.Context) ([]string, error)
	Backup(ctx context.Context, kind string, progress func(Progress)) (string, error)
	ReadRepository(ctx context.Context, stanza string) (Repository, error)
}

// Archiver reads the local PostgreSQL's archiver statistics.
type Archiver interface {
	ArchiverStats(ctx context.Context) (postgres.ArchiverStats, error)
}

// Hooks runs the operator's event command.
type Hooks interface {
	Fire(event string, success bool, details string)
}

// ManagerConfig is what a Manager is made of. Archiver and Hooks may be nil.
type ManagerConfig struct {
	Member   string
	Engine   Engine
	Lock     Lock
	Archiver Archiver
	Hooks    Hooks
	// ProgressEvery is how often a running backup writes its progress to
	// the lock, which also checks that the lock is still this run's.
	ProgressEvery time.Duration
	// InfoEvery and ArchiverEvery are how often the repository and the
	// archiver statistics are read for GET /backups and the metrics.
	InfoEvery, ArchiverEvery time.Duration

	// Schedules run on the leader (none: only jobs asked for run), in
	// Location, on Clock (the wall clock when nil).
	Schedules map[string]Cron
	Location  *time.Location
	Clock     Clock
	// Policy is applied after every successful base backup and dump, by
	// Expirer (nil: never).
	Policy  Policy
	Expirer Expirer
	// Dumper takes logical dumps and Driller drills (nil: not here).
	Dumper  *Dumper
	Driller Drills
	// Remote runs drills on a healthy replica's host (nil: on this one).
	Remote RemoteDriller
}

// Manager runs this node's part of the backups: as leader, stanza-create
// and check when it takes over, and the base backups asked for; on every
// node, watching the WAL archiver. It makes no HA decision: the agent tells
// it whether this node leads (SetLeading).
type Manager struct {
	c   ManagerConfig
	log hclog.Logger

	// root is the life of the Manager: Run's context ends it.
	root       context.Context
	stop       context.CancelFunc
	mu         sync.Mutex
	leading    bool
	leadCancel context.CancelFunc
	leadCtx    context.Context
	// ready is closed once the takeover's stanza-create and check are
	// over: pgBackRest takes the same lock for them as for a backup.
	ready      chan struct{}
	run        *run
	last       *dcs.BackupRun
	runs       map[string]dcs.BackupRun
	dumps      []Manifest
	repo       *Repository
	repoErr    error
	archiver   *postgres.ArchiverStats
	failReason string
	lastWarn   string
	lastWarnAt time.Time
	refresh    chan struct{}
	// drilling: a drill asked for by the leader runs on this host.
	drilling atomic.Bool
	// started is when the Manager was made: the schedules' reference
	// before any run of theirs succeeded.
	started time.Time
	// reschedule hands new schedules to this leadership's scheduler (the
	// newest only: it holds one).
	reschedule chan map[string]Cron
}

type run struct {
	lock     dcs.BackupLock
	rev      int64
	cancel   context.CancelCauseFunc
	progress Progress
	// host is the member whose host runs it (a drill may run on a
	// replica's); "" is this one.
	host string
	// done is closed when the run has ended and been recorded, with err
	// its outcome.
	done chan struct{}
	err  error
}

// NewManager makes a Manager; Run starts its background work.
func NewManager(c ManagerConfig, log hclog.Logger) *Manager {
	if c.ProgressEvery == 0 {
		c.ProgressEvery = 2 * time.Second
	}
	if c.InfoEvery == 0 {
		c.InfoEvery = time.Minute
	}
	if c.ArchiverEvery == 0 {
		c.ArchiverEvery = 5 * time.Second
	}
	root, stop := context.WithCancel(context.Background())
	return &Manager{c: c, log: log, refresh: make(chan struct{}, 1), root: root, stop: stop, started: time.Now()}
}

// Run reads the repository and the archiver statistics periodically until
// ctx ends; leader work started by SetLeading lives under ctx too.
func (m *Manager) Run(ctx context.Context) {
	defer m.stop()
	info := time.NewTicker(m.c.InfoEvery)
	defer info.Stop()
	arch := time.NewTicker(m.c.ArchiverEvery)
	defer arch.Stop()
	m.readRepository(ctx)
	for {
		select {
		case <-ctx.Done():
			m.SetLeading(false)
			return
		case <-info.C:
			m.readRepository(ctx)
		case <-m.refresh:
			m.readRepository(ctx)
		case <-arch.C:
			m.watchArchiver(ctx)
		}
	}
}

// SetLeading is called by the HA loop after every iteration: whether this
// node holds the leader key and runs as a writable primary. It never
// blocks: on taking over it starts stanza-create and check in the
// background; on losing leadership it stops them and any backup.
func (m *Manager) SetLeading(leading bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if leading == m.leading {
		return
	}
	m.leading = leading
	if !leading {
		if m.leadCancel != nil {
			m.log.Info("no longer leading: stopping backup work")
			m.leadCancel()
			m.leadCancel = nil
		}
		return
	}
	m.leadCtx, m.leadCancel = context.WithCancel(m.root)
	m.ready = make(chan struct{})
	go func(ready chan struct{}) {
		defer close(ready)
		m.takeOver(m.leadCtx)
	}(m.ready)
	if len(m.c.Schedules) > 0 {
		m.startScheduler()
	}
}

// startScheduler runs the schedules for this leadership; m.mu is held.
func (m *Manager) startScheduler() {
	m.reschedule = make(chan map[string]Cron, 1)
	go m.schedule(m.leadCtx, m.ready, m.c.Schedules, m.reschedule)
}

// SetSchedules replaces the schedules (SIGHUP): a leader's scheduler takes
// them after its current job, and starts if it had none.
func (m *Manager) SetSchedules(sc map[string]Cron) {
	m.mu.Lock()
	defer m.mu.Unlock()
	had := len(m.c.Schedules) > 0
	m.c.Schedules = maps.Clone(sc)
	switch {
	case !m.leading || len(sc) == 0 && !had:
	case !had:
		m.startScheduler()
	default:
		select { // the newest replaces any not taken yet
		case <-m.reschedule:
		default:
		}
		m.reschedule <- m.c.Schedules
	}
}

// schedule runs the schedules while this node leads, once the takeover is
// over.
func (m *Manager) schedule(ctx context.Context, ready <-chan struct{}, sc map[string]Cron, reload <-chan map[string]Cron) {
	select {
	case <-ctx.Done():
		return
	case <-ready:
	}
	clock := m.c.Clock
	if clock == nil {
		clock = wallClock{}
	}
	s := &scheduler{Member: m.c.Member, Schedules: sc, Location: m.c.Location, Clock: clock,
		Store: m.c.Lock, Jobs: m, Log: m.log.Named("schedule"), Reload: reload}
	s.run(ctx)
}

type wallClock struct{}

func (wallClock) Now() time.Time                         { return time.Now() }
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RunJob runs one scheduled job to its end (the scheduler's jobs).
func (m *Manager) RunJob(ctx context.Context, kind string, slot time.Time) error {
	r, err := m.start(kind)
	if err != nil {
		return err
	}
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		<-r.done // the run stops with leadership too; its lock goes once it has
		return ctx.Err()
	}
}

// takeOver makes the stanza (a new cluster, or a repository that lost it),
// fills the archive's gap a dead primary may have left, and checks the
// archive end to end: check forces a WAL switch, so the new timeline's
// history and first segment reach the repository at once.
func (m *Manager) takeOver(ctx context.Context) {
	for {
		err := m.c.Engine.StanzaCreate(ctx)
		if err == nil {
			break
		}
		m.log.Warn("stanza-create failed: retrying", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
	// The former primary may have died with segments it had not archived
	// yet; this node received them: the archive must have no gap.
	for {
		pushed, err := m.c.Engine.PushMissing(ctx)
		if len(pushed) > 0 {
			m.log.Info("pushed WAL segments the former primary had not archived", "segments", strings.Join(pushed, " "))
		}
		if err == nil {
			break
		}
		m.log.Warn("cannot push the former primary's unarchived WAL: retrying", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
	start := time.Now()
	if err := m.c.Engine.Check(ctx); err != nil {
		if ctx.Err() == nil {
			m.log.Warn("pgbackrest check failed: WAL may not reach the repository", "error", err)
		}
		return
	}
	m.log.Info("pgbackrest check passed: archive reachable from the new primary", "took", time.Since(start).Round(time.Millisecond))
	m.kick()
}

func (m *Manager) kick() {
	select {
	case m.refresh <- struct{}{}:
	default:
	}
}

// kinds are the base backup types.
var kinds = []string{"full", "diff", "incr"}

// JobKinds are the jobs a leader runs, one at a time in the cluster.
var JobKinds = []string{"full", "diff", "incr", "logical", "drill"}

// Start starts a job of kind on this node, which must lead: a base backup,
// a logical dump or a restore drill. It takes the cluster-wide lock first:
// ErrRunning when another run (here or on a former leader still
// finishing) holds it.
func (m *Manager) Start(ctx context.Context, kind string) (dcs.BackupLock, error) {
	r, err := m.start(kind)
	if err != nil {
		return dcs.BackupLock{}, err
	}
	return r.lock, nil
}

func (m *Manager) start(kind string) (*run, error) {
	if !slices.Contains(JobKinds, kind) {
		return nil, fmt.Errorf("%w %q: want full, diff, incr, logical or drill", ErrBadKind, kind)
	}
	switch {
	case kind == "logical" && m.c.Dumper == nil:
		return nil, fmt.Errorf("logical dumps: %w (they need a repository directory)", ErrNotConfigured)
	case kind == "drill" && m.c.Driller == nil:
		return nil, fmt.Errorf("drills: %w", ErrNotConfigured)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.leading || m.leadCtx == nil {
		return nil, errNotLeading
	}
	if r := m.run; r != nil {
		return nil, fmt.Errorf("%w: %s backup %s on %s since %s", ErrRunning, r.lock.Type, r.lock.ID, r.lock.Member, r.lock.Started.Format(time.RFC3339))
	}
	now := time.Now().UTC()
	l := dcs.BackupLock{Member: m.c.Member, ID: fmt.Sprintf("%s-%d", m.c.Member, now.UnixMilli()), Type: kind, Started: now}
	// The lock call must not outlive leadership.
	ctx, cancel := context.WithTimeout(m.leadCtx, 10*time.Second)
	defer cancel()
	rev, err := m.c.Lock.AcquireBackupLock(ctx, l)
	if errors.Is(err, dcs.ErrKeyModified) {
		if c, cerr := m.c.Lock.Cluster(ctx); cerr == nil && c.BackupLock != nil {
			h := c.BackupLock
			return nil, fmt.Errorf("%w: %s backup %s on %s since %s", ErrRunning, h.Type, h.ID, h.Member, h.Started.Format(time.RFC3339))
		}
		return nil, ErrRunning
	}
	if err != nil {
		return nil, fmt.Errorf("take the backup lock: %w", err)
	}
	rctx, rcancel := context.WithCancelCause(m.leadCtx)
	r := &run{lock: l, rev: rev, cancel: rcancel, done: make(chan struct{})}
	m.run = r
	m.log.Info("backup started", "type", kind, "id", l.ID)
	go m.execute(rctx, r, m.ready)
	return r, nil
}

var errLockLost = errors.New("the backup lock was lost (this agent's lease expired)")

// execute runs one backup to its end, once the takeover is over (ready),
// and records how it ended.
func (m *Manager) execute(ctx context.Context, r *run, ready <-chan struct{}) {
	done := make(chan struct{})
	go m.keepLock(ctx, r, done)
	var label, details string
	var size int64
	var err error
	select {
	case <-ready:
		label, size, details, err = m.work(ctx, r)
	case <-ctx.Done():
		err = ctx.Err()
	}
	close(done)
	if err != nil {
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, errLockLost):
			err = fmt.Errorf("stopped: %w", cause)
		case ctx.Err() != nil:
			err = fmt.Errorf("stopped: this member no longer leads the cluster")
		}
	}
	m.mu.Lock()
	rev, host := r.rev, r.host
	m.mu.Unlock()
	// The lock goes once pgBackRest has exited, not before.
	relCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if rerr := m.c.Lock.ReleaseBackupLock(relCtx, rev); rerr != nil && !errors.Is(rerr, dcs.ErrKeyModified) {
		m.log.Warn("cannot release the backup lock (it goes with this agent's lease)", "error", rerr)
	}
	member := m.c.Member
	if host != "" {
		member = host
	}
	res := dcs.BackupRun{Kind: r.lock.Type, ID: r.lock.ID, Member: member, Label: label, OK: err == nil,
		Started: r.lock.Started, Finished: time.Now().UTC(), Size: size, Details: details}
	if err != nil {
		res.Error = err.Error()
	} else if repo, rerr := m.c.Engine.ReadRepository(relCtx, ""); rerr == nil {
		m.setRepository(repo, nil)
		for _, b := range repo.Info.Backups {
			if b.Label == label {
				res.Size = b.Size
			}
		}
	}
	if rerr := m.c.Lock.RecordBackupRun(relCtx, res); rerr != nil {
		m.log.Warn("cannot record the backup run", "error", rerr)
	}
	m.mu.Lock()
	m.last = &res
	if m.runs == nil {
		m.runs = map[string]dcs.BackupRun{}
	}
	prev := m.runs[res.Kind]
	if res.OK {
		res.LastSuccess = res.Finished
	} else {
		res.LastSuccess = prev.LastSuccess
	}
	m.runs[res.Kind] = res
	m.mu.Unlock()
	took := res.Finished.Sub(res.Started).Round(100 * time.Millisecond)
	event := "backup"
	if res.Kind == "drill" {
		event = "drill"
	}
	drillKV := []any{"id", res.ID, "took", took}
	if res.Member != m.c.Member {
		drillKV = append(drillKV, "peer", res.Member)
	}
	switch {
	case err != nil && res.Kind == "drill":
		m.log.Error("restore drill failed", append(drillKV, "error", err)...)
	case err != nil:
		m.log.Error("backup failed: nothing of it is listed as a backup", "type", res.Kind, "id", res.ID, "took", took, "error", err)
	case res.Kind == "drill":
		m.log.Info("restore drill passed", append(drillKV, "result", details)...)
	default:
		m.log.Info("backup complete", "type", res.Kind, "label", label, "size", res.Size, "took", took)
	}
	if err == nil && res.Kind != "drill" {
		m.expire(relCtx)
	}
	m.mu.Lock()
	m.run = nil
	r.err = err
	m.mu.Unlock()
	close(r.done)
	if err != nil {
		m.fire(event+"_failed", false, fmt.Sprintf("%s %s: %v", res.Kind, res.ID, err))
		return
	}
	if res.Kind == "drill" {
		m.fire(event, true, fmt.Sprintf("drill %s on %s passed in %s", label, res.Member, took))
		return
	}
	m.fire(event, true, fmt.Sprintf("%s %s %d bytes in %s", res.Kind, label, res.Size, took))
}

// work does what a run is for: a base backup, a logical dump or a drill.
func (m *Manager) work(ctx context.Context, r *run) (label string, size int64, details string, err error) {
	switch r.lock.Type {
	case "logical":
		c, err := m.c.Lock.Cluster(ctx)
		if err != nil {
			return "", 0, "", fmt.Errorf("logical dump: read the members: %w", err)
		}
		man, err := m.c.Dumper.dump(ctx, sources(c), time.Now())
		if err != nil {
			return "", 0, "", err
		}
		d := fmt.Sprintf("%d files from %s at %s", len(man.Files), man.Member, man.LSN)
		if man.Retried != "" {
			d += "; " + man.Retried
		}
		return man.Stamp, man.Size(), d, nil
	case "drill":
		res, err := m.drill(ctx, r)
		return res.Backup, 0, res.summary(), err
	}
	label, err = m.c.Engine.Backup(ctx, r.lock.Type, func(p Progress) {
		m.mu.Lock()
		r.progress = p
		m.mu.Unlock()
	})
	return label, 0, "", err
}

// expire applies the retention policy after a successful backup or dump.
// A failure is logged: the backup itself stands.
func (m *Manager) expire(ctx context.Context) {
	if m.c.Expirer == nil || m.c.Policy.KeepsAll() {
		return
	}
	plan, err := m.planExpiry(ctx)
	if err == nil {
		err = ApplyExpiry(ctx, m.c.Expirer, plan, m.dumpsRoot(), m.log)
	}
	if err != nil {
		m.log.Error("retention not applied", "error", err)
		return
	}
	m.readRepository(ctx)
}

// planExpiry reads the repository and the dumps afresh and applies the
// policy to them.
func (m *Manager) planExpiry(ctx context.Context) (ExpiryPlan, error) {
	repo, err := m.c.Engine.ReadRepository(ctx, "")
	if err != nil {
		return ExpiryPlan{}, fmt.Errorf("read the repository: %w", err)
	}
	dumps, err := Dumps(m.dumpsRoot())
	if err != nil {
		return ExpiryPlan{}, err
	}
	return PlanExpiry(repo, dumps, m.c.Policy, m.location()), nil
}

func (m *Manager) dumpsRoot() string {
	if m.c.Dumper == nil {
		return ""
	}
	return m.c.Dumper.Root
}

func (m *Manager) location() *time.Location {
	if m.c.Location == nil {
		return time.Local
	}
	return m.c.Location
}

// keepLock writes the run's progress into the lock every ProgressEvery;
// a lost compare (the lock expired with this agent's lease, or was deleted)
// stops the backup: another leader may start one.
func (m *Manager) keepLock(ctx context.Context, r *run, done <-chan struct{}) {
	t := time.NewTicker(m.c.ProgressEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		l, rev := r.lock, r.rev
		l.Percent, l.Bytes = r.progress.Percent, r.progress.Bytes
		m.mu.Unlock()
		nrev, err := m.c.Lock.UpdateBackupLock(ctx, l, rev)
		switch {
		case errors.Is(err, dcs.ErrKeyModified):
			m.log.Error("backup lock lost: stopping the backup", "id", l.ID)
			r.cancel(errLockLost)
			return
		case err != nil:
			m.log.Warn("cannot write backup progress", "error", err)
		default:
			m.mu.Lock()
			r.rev = nrev
			m.mu.Unlock()
		}
	}
}

func (m *Manager) fire(event string, ok bool, details string) {
	if m.c.Hooks != nil {
		m.c.Hooks.Fire(event, ok, details)
	}
}

func (m *Manager) readRepository(ctx context.Context) {
	repo, err := m.c.Engine.ReadRepository(ctx, "")
	if err != nil && ctx.Err() == nil {
		m.log.Debug("cannot read the backup repository", "error", err)
	}
	m.setRepository(repo, err)
	dumps, derr := Dumps(m.dumpsRoot())
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c, cerr := m.c.Lock.Cluster(cctx)
	cancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	if derr == nil {
		m.dumps = dumps
	}
	if cerr == nil {
		m.runs = c.BackupRuns
	}
}

func (m *Manager) setRepository(repo Repository, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.repoErr = err
	if err == nil {
		m.repo = &repo
	}
}

// watchArchiver reads pg_stat_archiver and says so, once per failing
// segment, when archiving fails: PostgreSQL keeps the WAL and retries, and
// nothing else waits for it (a failover does not).
func (m *Manager) watchArchiver(ctx context.Context) {
	if m.c.Archiver == nil {
		return
	}
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	st, err := m.c.Archiver.ArchiverStats(actx)
	cancel()
	if err != nil {
		return // PostgreSQL is down or starting: the HA loop says so
	}
	m.mu.Lock()
	prev := m.archiver
	m.archiver = &st
	m.mu.Unlock()
	failingNow := st.FailedCount > 0 && st.LastFailedTime.After(st.LastArchivedTime)
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case failingNow:
		// PostgreSQL retries a failing file 3 times, then waits up to a
		// minute: say so once per file, and again every 5 minutes.
		if st.LastFailedWAL == m.lastWarn && time.Since(m.lastWarnAt) < 5*time.Minute {
			return
		}
		m.failReason = m.failureReason(st.LastFailedWAL)
		m.lastWarn, m.lastWarnAt = st.LastFailedWAL, time.Now()
		m.log.Warn("wal archive failing: PostgreSQL keeps the WAL and retries; failover is not held up",
			"segment", st.LastFailedWAL, "failures", st.FailedCount, "reason", m.failReason)
	case m.lastWarn != "" && prev != nil && st.ArchivedCount > prev.ArchivedCount:
		m.log.Info("wal archive works again", "segment", st.LastArchivedWAL)
		m.lastWarn = ""
	}
}

// failureReason is the last error line that names segment in this node's
// archive log (see PushWAL).
func (m *Manager) failureReason(segment string) string {
	dir := m.c.Engine.Options().logPath()
	files, _ := filepath.Glob(filepath.Join(dir, "*archive-push*.log"))
	var best string
	var bestAt time.Time
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			continue
		}
		if l := lastErrorLine(f, segment); l != "" && st.ModTime().After(bestAt) {
			best, bestAt = l, st.ModTime()
		}
	}
	if best == "" {
		return "unknown (see PostgreSQL's log)"
	}
	return best
}

func lastErrorLine(path, segment string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > tail {
		_, _ = f.Seek(st.Size()-tail, 0)
	}
	b := make([]byte, tail)
	n, _ := f.Read(b)
	lines := strings.Split(string(b[:n]), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "ERROR") && (segment == "" || strings.Contains(lines[i], segment)) {
			if _, msg, ok := strings.Cut(lines[i], "ERROR: "); ok {
				return strings.TrimSpace(msg)
			}
			return strings.TrimSpace(lines[i])
		}
	}
	return ""
}
