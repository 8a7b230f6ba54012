package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

// DCS is the slice of the cluster store the agent uses.
type DCS interface {
	Cluster(ctx context.Context) (*dcs.Cluster, error)
	Renew(ctx context.Context) (time.Duration, error)
	AcquireLeader(ctx context.Context) (bool, error)
	UpdateLeader(ctx context.Context) error
	ReleaseLeader(ctx context.Context) error
	TouchMember(ctx context.Context, m dcs.Member) error
	Initialize(ctx context.Context, sysid string) (int64, error)
	SetInitialize(ctx context.Context, sysid string, prevRevision int64) error
	CancelInitialize(ctx context.Context, prevRevision int64) error
	SetConfig(ctx context.Context, raw []byte, prevRevision int64) error
	SetFailover(ctx context.Context, f dcs.Failover, prevRevision int64) error
	DeleteFailover(ctx context.Context, prevRevision int64) error
	AppendHistory(ctx context.Context, e dcs.HistoryEntry) error
	SetStatus(ctx context.Context, s dcs.Status) error
	SetFailsafe(ctx context.Context, members []string) error
	SetSync(ctx context.Context, s dcs.Sync, prevRevision int64) error
	Watch(ctx context.Context) <-chan struct{}
	MoveLease(ctx context.Context, ttl time.Duration) (time.Duration, error)
	Close(ctx context.Context) error
}

// Upstream is a PostgreSQL server to replicate from.
type Upstream struct {
	Name string
	Host string
	Port int
	// Slot is the replication slot to use on it ("" for none).
	Slot string
}

// StopMode is how PostgreSQL is stopped.
type StopMode string

// Stop modes, as pg_ctl names them.
const (
	StopFast      StopMode = "fast"
	StopImmediate StopMode = "immediate"
)

// Postgres is the local PostgreSQL as the agent drives it.
type Postgres interface {
	State(ctx context.Context) (PGState, error)
	// Bootstrap creates a new cluster in the empty data directory and
	// leaves it stopped (the agent starts it once it knows its lease is
	// safe).
	Bootstrap(ctx context.Context) error
	// CreateRoles creates the replication role on a new, running primary.
	CreateRoles(ctx context.Context) error
	// Start starts PostgreSQL: as a standby of up when up is non-nil (with
	// no upstream when up.Host is ""), else as primary.
	Start(ctx context.Context, up *Upstream) error
	Stop(ctx context.Context, mode StopMode) error
	// Fence ends every process of the data directory at once (backends that
	// outlived their postmaster included) and returns once none is left.
	Fence(ctx context.Context) error
	// Restart restarts PostgreSQL in its current role.
	Restart(ctx context.Context) error
	// Reload makes PostgreSQL re-read its configuration files.
	Reload(ctx context.Context) error
	// SetClusterParameters writes the cluster-wide parameters and makes a
	// running server re-read them; it reports whether they changed.
	SetClusterParameters(ctx context.Context, params map[string]string) (bool, error)
	// Promote makes a standby a primary and waits until it accepts writes.
	Promote(ctx context.Context) error
	// ReserveTimelines makes the next promotion choose a timeline ID above
	// upTo. PostgreSQL takes the highest ID whose history file it finds
	// (pg_wal, the archive) plus one: a standby promoted from an ancestor
	// of the newest timeline would otherwise reuse the newest timeline's
	// ID for different WAL.
	ReserveTimelines(ctx context.Context, upTo uint32) error
	// Follow makes PostgreSQL a standby of up: a running standby is
	// repointed without a restart; a primary is stopped and restarted as
	// standby.
	Follow(ctx context.Context, up Upstream) error
	// Clone copies up's data into the empty data directory.
	Clone(ctx context.Context, up Upstream) error
	// Rewind makes a stopped former primary fit to follow up.
	Rewind(ctx context.Context, up Upstream) error
	// Wipe removes the data directory (before a re-clone).
	Wipe(ctx context.Context) error
	// Checkpoint runs CHECKPOINT (so a clean shutdown is quick).
	Checkpoint(ctx context.Context) error
	// ShutdownCheckpoint is the WAL position a standby has reached once it
	// holds this cleanly stopped server's whole shutdown checkpoint (its
	// position >= it).
	ShutdownCheckpoint(ctx context.Context) (wal.LSN, error)
	// SyncSlots creates the physical replication slots want that are
	// missing and drops the inactive ones in neither want nor keep; it
	// returns the ones dropped, and the unwanted ones left because a
	// standby still reads them.
	SyncSlots(ctx context.Context, want, keep []string) (dropped, busy []string, err error)
	// SetSyncStandbys makes commits wait for the named standbys (none: for
	// no one; AnyStandby alone: for any one) and returns once PostgreSQL
	// uses it.
	SetSyncStandbys(ctx context.Context, names []string) error
	// SyncStatus reads which standbys commits wait for now.
	SyncStatus(ctx context.Context) (SyncStatus, error)
}

// Pooler is the local connection pooler, kept pointed at the leader.
type Pooler interface {
	// SetLeader points "primary" entries at addr (host:port; "" when there
	// is no leader).
	SetLeader(ctx context.Context, addr string) error
	// Pause holds new transactions of "primary" entries (planned switchover).
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	// Fence points "primary" entries nowhere and drops their connections
	// to this node (clients of session pooling too); new clients wait
	// until Resume.
	Fence(ctx context.Context) error
	State() string
}

// Watchdog fences PostgreSQL from outside the agent when it is not fed.
type Watchdog interface {
	// Arm: fence unless armed again (or disarmed) before deadline; and,
	// unless keepOnExit, at once if the agent dies.
	Arm(deadline time.Time, keepOnExit bool) error
	Disarm() error
}

// Peers asks other members for their state (REST GET /patroni).
type Peers interface {
	Fetch(ctx context.Context, members []dcs.Member) []Peer
}

// Probe asks a PostgreSQL server directly, not its agent, what it is.
type Probe interface {
	Probe(ctx context.Context, hostPort string) ProbeResult
}

// ProbeResult is what a PostgreSQL server said when asked directly.
type ProbeResult int

const (
	// ProbeNoAnswer: refused, or no answer in time.
	ProbeNoAnswer ProbeResult = iota
	// ProbeStandby: it answered that it is in recovery.
	ProbeStandby
	// ProbePrimary: it answered that it is not in recovery.
	ProbePrimary
	// ProbeRunning: the server itself answered, but not its role (an
	// error such as "too many clients", or authentication refused): it runs.
	ProbeRunning
)

// Hooks runs the operator's event command, asynchronously.
type Hooks interface {
	Fire(event string, success bool, details string)
}

// Clock is the time source and the loop's only way to wait or to run
// something beside itself; tests move it by hand.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
	// Sleep waits d, or until ctx ends (returning its error).
	Sleep(ctx context.Context, d time.Duration) error
	// Go runs f beside the caller; stop cancels f's context and returns
	// once f has returned.
	Go(f func(ctx context.Context)) (stop func())
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (realClock) Go(f func(ctx context.Context)) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// Settings are the agent's static facts.
type Settings struct {
	Node
	Scope string
	// ConnectAddress is host:port of this node's PostgreSQL for others.
	ConnectAddress string
	// APIURL is this node's REST API base URL.
	APIURL string
	Tags   map[string]string
	// Initial is the dynamic configuration written at bootstrap.
	Initial config.Dynamic
	// PeerTimeout bounds asking the other members for their WAL position.
	PeerTimeout time.Duration
	// CloneTimeout and RewindTimeout bound the long actions: a clone
	// (pg_basebackup or a restore) and pg_rewind (0: no bound).
	CloneTimeout, RewindTimeout time.Duration
	// WatchdogRequired: watchdog.mode is "required".
	WatchdogRequired bool
	Version          string
}

// Deps are the agent's side effects. Pooler, Watchdog, Hooks and WatchExit
// may be nil.
type Deps struct {
	DCS      DCS
	Postgres Postgres
	Pooler   Pooler
	Watchdog Watchdog
	Peers    Peers
	Probe    Probe
	Hooks    Hooks
	Clock    Clock
	// WatchExit closes its channel when process pid exits (stop ends the
	// watch): the agent learns of its postmaster's death at once, not at
	// the next loop.
	WatchExit func(pid int) (exited <-chan struct{}, stop func())
	Backup    Backup
	// Failsafe confirms this leader with the members while etcd is
	// unreachable (nil: failsafe_mode cannot work here).
	Failsafe Failsafe
}

// Agent is the HA loop of one node.
type Agent struct {
	s    Settings
	d    Deps
	log  hclog.Logger
	wake chan struct{}

	status atomic.Pointer[Status]
	// dynSnap is the dynamic configuration the loop last read, for readers
	// that must not wait for the loop (operators' requests).
	dynSnap atomic.Pointer[config.Dynamic]
	// longAction is the long action running now (clone, rewind, start),
	// for requests that would wait for the loop: they are refused at once.
	longAction atomic.Pointer[Decision]
	// live is a member configuration re-read on SIGHUP, waiting for the
	// start of the next step (SetLive).
	live atomic.Pointer[Live]
	// fsView is the last cluster read, for failsafe rounds.
	fsView atomic.Pointer[failsafeView]
	// started is when this agent was made: a member restarted during a
	// failsafe leader's round holds off as if it had confirmed then.
	started time.Time
	// fsStartHeld: the hold for a start under failsafe_mode was set.
	fsStartHeld bool

	// mu guards the loop's state; only the loop goroutine writes it, and
	// shutdown takes it to wait for a running step.
	mu sync.Mutex
	st loopState

	// lease is shared with the keeper that renews it (guard.go).
	lease      leaseState
	stopKeeper func()

	// steer is the local pooler and what it was last told (steer.go).
	steer steering

	// pm watches the running postmaster (postmaster.go).
	pm pmWatch

	// restarts and reinits are operators' requests waiting for the loop.
	restarts, reinits requests
}

// New builds an agent; Run starts it.
func New(s Settings, d Deps, log hclog.Logger) *Agent {
	if d.Clock == nil {
		d.Clock = realClock{}
	}
	if s.PeerTimeout == 0 {
		s.PeerTimeout = time.Second
	}
	a := &Agent{s: s, d: d, log: log, wake: make(chan struct{}, 1), st: loopState{dynamic: s.Initial}, started: d.Clock.Now()}
	a.steer.p, a.steer.clock, a.steer.log, a.steer.self = d.Pooler, d.Clock, log, s.ConnectAddress
	a.status.Store(&Status{Name: s.Name, Scope: s.Scope, Priority: s.Priority})
	initial := s.Initial
	a.dynSnap.Store(&initial)
	return a
}

// Live is the part of this member's configuration that may change while
// the agent runs (SIGHUP): what the other members and the health checks
// read of it.
type Live struct {
	Priority      int
	NoFailover    bool
	ReplicateFrom string
	// Tags are all of the member's tags, the three above included as
	// "true" / the name, as the member record carries them.
	Tags map[string]string
}

// SetLive hands l to the loop, which takes it at the start of its next
// step (woken now): a step never sees half of it, nor a change midway.
func (a *Agent) SetLive(l Live) {
	l.Tags = maps.Clone(l.Tags)
	a.live.Store(&l)
	a.Wake()
}

// takeLive applies a configuration SetLive handed over; the loop's lock is
// held, and nothing beside the loop reads these fields.
func (a *Agent) takeLive() {
	l := a.live.Swap(nil)
	if l == nil {
		return
	}
	a.s.Priority, a.s.NoFailover, a.s.ReplicateFrom, a.s.Tags = l.Priority, l.NoFailover, l.ReplicateFrom, l.Tags
}

// Wake makes the loop run now instead of at its next tick.
func (a *Agent) Wake() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run runs the HA loop until ctx ends, then shuts down as DESIGN.md says: a
// leader stops PostgreSQL cleanly and deletes its leader key; a replica
// stops PostgreSQL.
func (a *Agent) Run(ctx context.Context) error {
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events := a.d.DCS.Watch(watchCtx)
	defer a.pm.stop()
	for {
		a.Step(ctx)
		wait := a.loopWait()
		select {
		case <-ctx.Done():
			return a.shutdown()
		case <-a.wake:
		case <-events:
		case <-a.d.Clock.After(wait):
		}
	}
}

// handoverPoll is the loop period of a switchover candidate: the old
// leader waits for its WAL position, which it reads from this node's
// status, so a fresh status shortens the handover.
const handoverPoll = 50 * time.Millisecond

func (a *Agent) loopWait() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.Status().DCSClusterView; c != nil && c.Failover != nil && c.Failover.Kind == "switchover" &&
		c.Failover.Candidate == a.s.Name && c.Leader != nil && c.Leader.Name != a.s.Name &&
		!a.d.Clock.Now().Before(c.Failover.ScheduledAt) {
		return handoverPoll
	}
	if a.st.replayWait != 0 {
		return handoverPoll
	}
	return a.renewEvery()
}

// renewEvery is loop_wait: how often the lease is renewed.
func (a *Agent) renewEvery() time.Duration {
	// From the snapshot: the keeper calls this outside the loop's lock.
	if w := a.dynSnap.Load().LoopWait.D(); w > 0 {
		return w
	}
	return time.Second
}

// shutdown stops this node on SIGTERM.
func (a *Agent) shutdown() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := a.Status()
	var errs []error
	if st.IsLeader && !a.st.dynamic.Pause {
		a.log.Info("shutting down leader: stopping postgres cleanly, then releasing the leader key")
		// The watchdog stays armed (and the lease renewed) until
		// PostgreSQL is down.
		err := a.stopPG(ctx, "agent shutdown")
		if err != nil {
			errs = append(errs, fmt.Errorf("stop postgres: %w", err))
			// The key is kept: releasing it with PostgreSQL perhaps still
			// running could make two primaries. The lease expires instead.
		} else {
			a.setGuard(false)
			a.steer.fence(ctx)
			if err := a.d.DCS.ReleaseLeader(ctx); err != nil && !errors.Is(err, dcs.ErrNotLeader) {
				errs = append(errs, fmt.Errorf("release leader key: %w", err))
			}
		}
	} else if !a.st.dynamic.Pause {
		a.log.Info("shutting down replica: stopping postgres")
		if err := a.stopPG(ctx, "agent shutdown"); err != nil {
			errs = append(errs, fmt.Errorf("stop postgres: %w", err))
		}
		a.setGuard(false)
	} else {
		a.setGuard(false)
	}
	if a.stopKeeper != nil {
		a.stopKeeper()
	}
	if err := a.d.DCS.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("close dcs: %w", err))
	}
	return errors.Join(errs...)
}

// Step runs one observe-decide-act iteration and returns the decision.
func (a *Agent) Step(ctx context.Context) Decision {
	a.mu.Lock()
	defer a.mu.Unlock()
	start := a.d.Clock.Now()
	a.takeLive()
	a.noteProgress()
	if a.stopKeeper == nil {
		// The first step has a lease (or knows it cannot get one) before
		// it decides; from then on the keeper renews. The first
		// observation learns whether the start guard may have fenced.
		a.st.mem.startWritable = a.guardAtStart(ctx)
		_ = a.renewLease(ctx)
		a.startKeeper()
		defer a.endStartGuard()
	}
	o := a.observe(ctx)
	wanted := Decide(o)
	d, held := a.st.fail.hold(o, wanted)
	if !sameDecision(d, a.st.last) {
		a.log.Info("decision", "action", d.Action.String(), "target", d.Target, "reason", d.Reason)
	}
	out := a.execute(ctx, o, d)
	// The effects wrote nothing of the loop's state: it advances here,
	// from what they report (loopstate.go).
	prev := a.st.fail
	var logged retryLog
	a.st, logged = advance(a.st, d, held, out, a.d.Clock.Now(), a.renewEvery())
	a.logRetry(d, out.Err, prev, logged)
	a.st.params = a.st.params.next(a.applyParameters(ctx, o))
	a.noteProgress()
	a.st.member = a.st.member.next(a.publish(ctx, o, d, out, start))
	a.tellBackup(out.PG)
	// The one invariant of the watchdog: armed to the lease whenever
	// PostgreSQL may accept writes, disarmed otherwise. In a paused cluster
	// the agent may be stopped or restarted for maintenance: the end of
	// the agent then does not fence (a frozen host still does, at the
	// deadline).
	a.setGuard(out.PG.MayWrite())
	a.setKeepOnExit(o.Dynamic.Pause)
	a.pm.track(a, out.PG.PostmasterPID)
	return d
}

func (a *Agent) observe(ctx context.Context) Observation {
	o := Observation{Node: a.s.Node, StartFailures: a.st.startFails, WatchdogRequired: a.s.WatchdogRequired}
	c, err := a.d.DCS.Cluster(ctx)
	if err == nil {
		// The cluster may come from a view the watch keeps, which cannot
		// tell that etcd stopped answering: the renewal is the probe.
		if rerr := a.renewError(); rerr != nil {
			c, err = nil, fmt.Errorf("etcd unreachable (the last lease renewal failed): %w", rerr)
		}
	}
	if err != nil {
		o.DCSError = err.Error()
	} else {
		o.Cluster = c
		var derr error
		// Members gone longer than this have no slot kept for them anywhere.
		forget := max(a.s.SlotsTTL, time.Hour)
		if a.st, derr = a.st.observed(c, a.d.Clock.Now(), forget); derr != nil {
			a.log.Warn("ignoring invalid dynamic config in dcs", "error", derr)
		}
		// A changed ttl reaches the lease through the keeper (guard.go
		// keepLease), which reads the snapshot.
		dyn := a.st.dynamic
		a.dynSnap.Store(&dyn)
		a.noteFailsafeView(c)
	}
	o.Dynamic = a.st.dynamic
	// A resume must reach the watchdog as soon as it is read: an agent
	// killed after it must be fenced.
	a.setKeepOnExit(o.Dynamic.Pause)
	pg, err := a.d.Postgres.State(ctx)
	if err != nil {
		a.log.Warn("cannot read postgres state", "error", err)
	}
	o.PG = pg
	if c != nil && c.Leader == nil && pg.Standby() && a.d.Peers != nil {
		pctx, cancel := context.WithTimeout(ctx, a.s.PeerTimeout)
		o.Peers = a.d.Peers.Fetch(pctx, c.Members)
		cancel()
	}
	if c != nil && c.Leader == nil && pg.Standby() && a.d.Probe != nil &&
		c.Status.Leader != "" && c.Status.Leader != a.s.Name && c.Status.ConnURL != "" {
		// The last leader's agent may be frozen or dead with its
		// PostgreSQL running on (its watchdog frozen too, or paused):
		// ask the server itself, not its REST API.
		pctx, cancel := context.WithTimeout(ctx, a.s.PeerTimeout)
		r := a.d.Probe.Probe(pctx, dcs.Addr(c.Status.ConnURL))
		cancel()
		switch r {
		case ProbePrimary, ProbeRunning:
			o.LastLeaderRuns = c.Status.Leader + " at " + dcs.Addr(c.Status.ConnURL)
		case ProbeStandby:
			o.LastLeaderStandby = c.Status.Leader
		}
	}
	o.RestartRequested = a.restarts.pending()
	o.ReinitRequested = a.reinits.pending()
	// The watchdog is told the current guard again every loop: a failure
	// to reach it shows in Unguarded at once, not only when arming.
	a.applyGuard()
	o.LeaseDeadline, o.Unguarded = a.leaseView()
	o.FailsafeHold = a.failsafeHold()
	o.Now = a.d.Clock.Now()
	a.st.mem = remember(a.st.mem, o)
	a.st.mem.annotate(&o)
	return o
}

// upstream resolves a member to a PostgreSQL address.
func (a *Agent) upstream(c *dcs.Cluster, name string) (Upstream, error) {
	m := c.Member(name)
	if m == nil {
		return Upstream{}, fmt.Errorf("member %s not found", name)
	}
	host, port := dcs.HostPort(m.ConnURL)
	if port == 0 {
		return Upstream{}, fmt.Errorf("member %s conn_url %q: no host:port", name, m.ConnURL)
	}
	up := Upstream{Name: name, Host: host, Port: port}
	if a.s.UseSlots {
		up.Slot = slotName(a.s.Name)
	}
	return up, nil
}

// slotName is the physical replication slot name of a member: lowercase
// letters, digits and underscores, as PostgreSQL requires.
func slotName(member string) string {
	b := []byte(member)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_':
		case c >= 'A' && c <= 'Z':
			b[i] = c + 'a' - 'A'
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

// applyParameters writes the dynamic configuration's PostgreSQL parameters
// on this node when they changed (and once after the agent starts): every
// node gets them, reloadable ones take effect at once, restart-only ones
// show as pending_restart until the operator restarts. It returns what it
// wrote.
func (a *Agent) applyParameters(ctx context.Context, o Observation) paramsWritten {
	if o.Cluster == nil || o.PG.DataEmpty {
		return paramsWritten{}
	}
	if a.st.params.ok && maps.Equal(a.st.params.params, o.Dynamic.Parameters) {
		return paramsWritten{}
	}
	changed, err := a.d.Postgres.SetClusterParameters(ctx, o.Dynamic.Parameters)
	if err != nil {
		a.log.Warn("cannot apply the cluster parameters", "error", err)
		return paramsWritten{}
	}
	if changed {
		a.log.Info("cluster parameters applied", "parameters", fmt.Sprint(o.Dynamic.Parameters))
	}
	return paramsWritten{ok: true, params: o.Dynamic.Parameters}
}
