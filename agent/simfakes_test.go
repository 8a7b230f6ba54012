package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

// The fakes of the simulated cluster, each as unkind as the real thing:
// etcd calls take time and time out (and may be applied although the
// client gave up), PostgreSQL takes time to start, recover, checkpoint and
// promote, can run without answering, and a killed postmaster can leave a
// busy backend that still commits; the watchdog is its own process with
// its own lifetime; peers' REST APIs can be cut apart from etcd.

// simClock is the agents' clock: the scheduler's.
type simClock struct{ w *world }

func (c simClock) Now() time.Time { return c.w.s.now }

func (c simClock) After(d time.Duration) <-chan time.Time {
	_ = c.w.s.sleep(context.Background(), d)
	ch := make(chan time.Time, 1)
	ch <- c.w.s.now
	return ch
}

func (c simClock) Sleep(ctx context.Context, d time.Duration) error { return c.w.s.sleep(ctx, d) }

func (c simClock) Go(f func(ctx context.Context)) func() {
	s := c.w.s
	parent := s.cur
	ctx, cancel := context.WithCancel(context.Background())
	child := s.spawn(parent.name+"/bg", parent.g, func() { f(ctx) })
	return func() {
		cancel()
		s.interrupt()
		s.join(child)
	}
}

// --- etcd ---

// simDCS is one agent's etcd client: every call takes its link's latency,
// is applied by etcd half way, and fails after retry_timeout when the
// answer is later than that (applied or not) or etcd cannot be reached.
type simDCS struct {
	n *simNode
	m *dcs.Memory
}

func (w *world) etcdCall(ctx context.Context, n *simNode, name string, op func() error) error {
	lat := w.etcdLatency(n)
	timeout := w.dyn.RetryTimeout.D()
	var res error
	applied := false
	if !w.etcdDown[n.name] && lat/2 < timeout {
		// The request is on the wire: it reaches etcd whatever becomes of
		// the client (frozen, killed) meanwhile.
		w.s.at(w.s.now.Add(lat/2), nil, func() {
			if w.etcdDown[n.name] {
				return
			}
			applied = true
			res = op()
		})
	}
	wait := min(lat, timeout)
	if w.etcdDown[n.name] {
		wait = timeout
	}
	if err := w.s.sleep(ctx, wait); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if !applied || lat > timeout {
		return fmt.Errorf("%s: %w: deadline exceeded", name, dcs.ErrUnavailable)
	}
	return res
}

func (w *world) etcdLatency(n *simNode) time.Duration {
	lat := time.Duration(1+w.rng.IntN(5)) * time.Millisecond
	if extra := w.etcdSlow[n.name]; extra > 0 {
		lat += extra
	}
	return lat
}

func (d simDCS) call(ctx context.Context, name string, op func() error) error {
	return d.n.w.etcdCall(ctx, d.n, name, op)
}

func (d simDCS) Cluster(ctx context.Context) (c *dcs.Cluster, err error) {
	err = d.call(ctx, "read cluster", func() (e error) { c, e = d.m.Cluster(ctx); return })
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (d simDCS) Renew(ctx context.Context) (ttl time.Duration, err error) {
	err = d.call(ctx, "renew lease", func() (e error) { ttl, e = d.m.Renew(ctx); return })
	return ttl, err
}

func (d simDCS) AcquireLeader(ctx context.Context) (won bool, err error) {
	err = d.call(ctx, "acquire leader key", func() (e error) { won, e = d.m.AcquireLeader(ctx); return })
	return won, err
}

func (d simDCS) UpdateLeader(ctx context.Context) error {
	return d.call(ctx, "update leader key", func() error { return d.m.UpdateLeader(ctx) })
}

func (d simDCS) ReleaseLeader(ctx context.Context) error {
	return d.call(ctx, "release leader key", func() error { return d.m.ReleaseLeader(ctx) })
}

func (d simDCS) TouchMember(ctx context.Context, m dcs.Member) error {
	return d.call(ctx, "write member", func() error { return d.m.TouchMember(ctx, m) })
}

func (d simDCS) Initialize(ctx context.Context, sysid string) (rev int64, err error) {
	err = d.call(ctx, "initialize", func() (e error) { rev, e = d.m.Initialize(ctx, sysid); return })
	return rev, err
}

func (d simDCS) SetInitialize(ctx context.Context, sysid string, prev int64) error {
	return d.call(ctx, "set initialize", func() error { return d.m.SetInitialize(ctx, sysid, prev) })
}

func (d simDCS) CancelInitialize(ctx context.Context, prev int64) error {
	return d.call(ctx, "cancel initialize", func() error { return d.m.CancelInitialize(ctx, prev) })
}

func (d simDCS) SetConfig(ctx context.Context, raw []byte, prev int64) error {
	return d.call(ctx, "set config", func() error { return d.m.SetConfig(ctx, raw, prev) })
}

func (d simDCS) SetFailover(ctx context.Context, f dcs.Failover, prev int64) error {
	return d.call(ctx, "set failover", func() error { return d.m.SetFailover(ctx, f, prev) })
}

func (d simDCS) DeleteFailover(ctx context.Context, prev int64) error {
	return d.call(ctx, "delete failover", func() error { return d.m.DeleteFailover(ctx, prev) })
}

func (d simDCS) AppendHistory(ctx context.Context, e dcs.HistoryEntry) error {
	return d.call(ctx, "append history", func() error { return d.m.AppendHistory(ctx, e) })
}

func (d simDCS) SetStatus(ctx context.Context, s dcs.Status) error {
	return d.call(ctx, "set status", func() error { return d.m.SetStatus(ctx, s) })
}

func (d simDCS) SetFailsafe(ctx context.Context, members []string) error {
	return d.call(ctx, "set failsafe", func() error { return d.m.SetFailsafe(ctx, members) })
}

func (d simDCS) SetSync(ctx context.Context, s dcs.Sync, prev int64) error {
	return d.call(ctx, "set sync", func() error { return d.m.SetSync(ctx, s, prev) })
}

// MoveLease: a move applied by etcd whose answer came too late may have
// moved the keys, as a real transaction's lost answer may.
func (d simDCS) MoveLease(ctx context.Context, ttl time.Duration) (got time.Duration, err error) {
	applied := false
	if d.n.w.refuseMove[d.n.name] {
		err = d.call(ctx, "move lease", func() error {
			if _, e := d.m.Renew(ctx); e != nil {
				return e
			}
			return fmt.Errorf("grant: etcdserver: too large lease TTL (%w)", dcs.ErrNotMoved)
		})
		return 0, err
	}
	err = d.call(ctx, "move lease", func() (e error) { applied = true; got, e = d.m.MoveLease(ctx, ttl); return })
	if err != nil && applied && errors.Is(err, dcs.ErrUnavailable) {
		err = fmt.Errorf("%w (%w)", err, dcs.ErrUnsettled)
	}
	return got, err
}

func (d simDCS) Watch(ctx context.Context) <-chan struct{} { return d.m.Watch(ctx) }
func (d simDCS) Close(ctx context.Context) error           { return d.m.Close(ctx) }

// --- PostgreSQL ---

// fakePG models PostgreSQL as a log of row IDs: the WAL position is the
// log's length, a standby copies its upstream's log while its own is a
// prefix of it, and a promotion starts a new timeline.
type fakePG struct {
	n *simNode
	w *world
	// bootstrapErr makes every initdb fail; bootstraps counts attempts.
	bootstrapErr error
	bootstraps   int
	// wipes counts removals of the data directory.
	wipes int

	empty bool
	// alive: a postmaster runs; ready: it accepts connections (startup
	// or crash recovery is over), since readySince; standby: it runs in
	// recovery.
	alive, ready, standby bool
	readySince            time.Time
	// stopping: a clean shutdown is under way (no new commits).
	stopping bool
	// mute: it runs but the agent's status query fails (all connection
	// slots taken): sessions it has may still commit.
	mute bool
	// frozen: its whole host is frozen (SIGSTOP of everything, a paused
	// VM): nothing commits, nothing answers, until thawed.
	frozen bool
	// gen changes whenever the postmaster dies, so a start or promotion
	// in progress knows it was cut short.
	gen int
	// needsRecovery: it died uncleanly; the next start runs crash
	// recovery, which takes recoveryTime. Else its last stop was clean.
	needsRecovery bool
	recoveryTime  time.Duration
	// checkpointTime is how long the next CHECKPOINT takes.
	checkpointTime time.Duration
	// orphanUntil: a busy backend outlived a killed postmaster and may
	// still commit until then (each backend calls setsid(): a kill of the
	// postmaster or of its process group leaves it running).
	orphanUntil time.Time

	timeline uint32
	// hist is the timeline's history: where each ancestor ended.
	hist []dcs.Fork
	// reserved: history files up to this timeline ID exist in pg_wal, so a
	// promotion picks a higher one.
	reserved   uint32
	log        []int
	upstream   string // member name
	sysid      string
	wasPrimary bool
	syncNames  []string // synchronous_standby_names, as the agent set it
}

// canCommit says whether a client's commit on this node can succeed now:
// the truth the invariant checks, whatever any agent believes.
func (p *fakePG) canCommit() bool {
	if p.frozen {
		return false
	}
	return (p.alive && p.ready && !p.standby && !p.stopping) || p.w.s.now.Before(p.orphanUntil)
}

// streaming: a ready standby whose upstream runs and whose log it follows.
func (p *fakePG) streaming() bool {
	if !p.alive || !p.ready || !p.standby || p.upstream == "" || p.frozen {
		return false
	}
	up := p.w.node(p.upstream)
	return up != nil && up.pg.alive && up.pg.ready && !up.pg.frozen && isPrefix(p.log, up.pg.log)
}

// die ends the postmaster. orphan: a busy backend lives on for a while
// (a postmaster-only kill: OOM killer, or a group kill that missed it).
func (p *fakePG) die(why string, orphan bool) {
	if !p.alive {
		return
	}
	wasWriter := p.ready && !p.standby && !p.stopping
	if wasWriter && orphan {
		p.orphanUntil = p.w.s.now.Add(p.w.orphanLife)
	}
	if !p.standby {
		p.wasPrimary = true
	}
	p.alive, p.ready, p.stopping, p.mute = false, false, false, false
	p.needsRecovery = true
	p.gen++
	p.w.logf("%s: postgres died (%s)", p.n.name, why)
}

// fenceAll kills every process of the data directory.
func (p *fakePG) fenceAll(why string) bool {
	had := p.alive || p.w.s.now.Before(p.orphanUntil)
	p.die(why, false)
	p.orphanUntil = time.Time{}
	return had
}

func (p *fakePG) sleep(ctx context.Context, d time.Duration) error { return p.w.s.sleep(ctx, d) }

func (p *fakePG) State(ctx context.Context) (PGState, error) {
	if p.alive && p.ready && p.mute {
		// The status query waits out its timeout.
		_ = p.sleep(ctx, 3*time.Second)
	} else {
		_ = p.sleep(ctx, time.Millisecond)
	}
	if p.empty {
		return PGState{DataEmpty: true}, nil
	}
	s := PGState{SystemID: p.sysid, Timeline: p.timeline, History: slices.Clone(p.hist)}
	switch {
	case !p.alive:
		s.Orphans = p.w.s.now.Before(p.orphanUntil)
		s.State = "stopped"
		if p.needsRecovery {
			s.State = "crashed"
		}
		s.WasPrimary = p.wasPrimary
		s.WAL = wal.LSN(len(p.log))
	case !p.ready || p.mute:
		s.Running, s.InRecovery = true, p.standby
		s.State = "unresponsive"
		if !p.ready {
			s.State = "starting"
		}
		s.PostmasterPID = 1000 + p.gen
	default:
		s.Running, s.Answering, s.State = true, true, "running"
		s.InRecovery = p.standby
		s.WAL, s.Replayed = wal.LSN(len(p.log)), wal.LSN(len(p.log))
		s.Streaming = p.streaming()
		if p.standby && p.upstream != "" {
			s.Upstream = p.upstream + ":5432"
		}
		s.PostmasterPID = 1000 + p.gen
	}
	return s, nil
}

func (p *fakePG) Bootstrap(ctx context.Context) error {
	p.bootstraps++
	if p.bootstrapErr != nil {
		return p.bootstrapErr
	}
	if !p.empty {
		return errors.New("data directory not empty")
	}
	if err := p.sleep(ctx, 500*time.Millisecond); err != nil {
		return err
	}
	p.w.systems++
	p.w.newestLog, p.w.newestNode = nil, p.n
	// initdb: a new cluster, stopped.
	p.empty, p.alive, p.ready, p.standby, p.timeline, p.hist = false, false, false, false, 1, nil
	p.needsRecovery, p.wasPrimary = false, true
	p.sysid = fmt.Sprint(7000000000000000000 + p.w.systems)
	p.gen++
	p.w.logf("%s: bootstrapped", p.n.name)
	return nil
}

func (p *fakePG) CreateRoles(ctx context.Context) error { return p.sleep(ctx, 10*time.Millisecond) }

func (p *fakePG) Start(ctx context.Context, up *Upstream) error {
	if p.empty {
		return errors.New("no data directory")
	}
	if p.alive {
		return errors.New("start postgres: already running")
	}
	if p.w.s.now.Before(p.orphanUntil) {
		return errors.New("start postgres: pre-existing shared memory block is still in use")
	}
	p.alive, p.ready, p.mute = true, false, false
	p.gen++
	g := p.gen
	if up == nil {
		p.standby = false
	} else {
		p.standby, p.upstream, p.wasPrimary = true, up.Name, false
	}
	d := 300 * time.Millisecond
	if p.needsRecovery {
		d += p.recoveryTime
		p.w.logf("%s: crash recovery (%s)", p.n.name, p.recoveryTime)
	}
	// The server comes up on its own, whatever becomes of the agent that
	// started it; pg_ctl waits for it.
	role := "primary"
	if up != nil {
		role = fmt.Sprintf("replica of %q", up.Name)
	}
	p.w.s.at(p.w.s.now.Add(d), nil, func() {
		if p.gen == g && p.alive {
			p.ready, p.needsRecovery, p.recoveryTime = true, false, 0
			p.readySince = p.w.s.now
			p.w.logf("%s: started as %s", p.n.name, role)
		}
	})
	if err := p.sleep(ctx, d); err != nil {
		return err
	}
	if p.gen != g || !p.ready {
		return errors.New("start postgres: it exited during startup")
	}
	return nil
}

func (p *fakePG) Stop(ctx context.Context, mode StopMode) error {
	if mode == StopImmediate {
		return p.Fence(ctx)
	}
	if !p.alive {
		return nil
	}
	g := p.gen
	p.stopping = true
	d := 100 * time.Millisecond
	if !p.standby {
		d = 200*time.Millisecond + p.checkpointTime/2 // the shutdown checkpoint
	}
	// Once asked, the server shuts down on its own.
	p.w.s.at(p.w.s.now.Add(d), nil, func() {
		if p.gen != g || !p.alive {
			return
		}
		if !p.standby {
			// A clean shutdown of a primary: the WAL senders send
			// everything up to the shutdown checkpoint to the connected
			// standbys before the server exits.
			for _, o := range p.w.nodes {
				if o.pg.streaming() && o.pg.upstream == p.n.name {
					o.pg.log = slices.Clone(p.log)
				}
			}
			p.wasPrimary = true
		}
		p.alive, p.ready, p.stopping, p.mute = false, false, false, false
		p.needsRecovery = false
		p.gen++
		p.w.logf("%s: postgres stopped (%s)", p.n.name, mode)
	})
	if err := p.sleep(ctx, d); err != nil {
		return err
	}
	if p.alive {
		return errors.New("stop postgres: it did not stop")
	}
	return nil
}

func (p *fakePG) Fence(ctx context.Context) error {
	if err := p.sleep(ctx, 5*time.Millisecond); err != nil {
		return err
	}
	if p.fenceAll("fenced by its agent") {
		p.w.logf("%s: agent fenced postgres", p.n.name)
	}
	return nil
}

func (p *fakePG) Promote(ctx context.Context) error {
	w := p.w
	if !p.alive || !p.ready || !p.standby {
		return errors.New("not a running standby")
	}
	w.checkPromotion(p.n)
	g := p.gen
	d := time.Duration(100+w.rng.IntN(900)) * time.Millisecond
	// Once asked, the server promotes itself, whatever becomes of the agent.
	w.s.at(w.s.now.Add(d), nil, func() {
		if p.gen == g && p.alive && p.standby {
			p.standby = false
			p.hist = append(slices.Clone(p.hist), dcs.Fork{Timeline: p.timeline, LSN: wal.LSN(len(p.log))})
			p.timeline = max(p.timeline, p.reserved) + 1
			p.upstream = ""
			w.newestLog, w.newestNode = slices.Clone(p.log), p.n
			w.logf("%s: promoted (timeline %d, wal %d)", p.n.name, p.timeline, len(p.log))
		}
	})
	if err := p.sleep(ctx, d); err != nil {
		return err
	}
	if p.gen != g || p.standby {
		return errors.New("promote: postgres died meanwhile")
	}
	return nil
}

func (p *fakePG) ReserveTimelines(ctx context.Context, upTo uint32) error {
	if err := p.sleep(ctx, 5*time.Millisecond); err != nil {
		return err
	}
	p.reserved = max(p.reserved, upTo)
	return nil
}

func (p *fakePG) Follow(ctx context.Context, up Upstream) error {
	if err := p.sleep(ctx, 20*time.Millisecond); err != nil {
		return err
	}
	if p.alive && !p.standby {
		return errors.New("follow: a primary must be stopped first")
	}
	p.upstream = up.Name
	if !p.alive {
		return p.Start(ctx, &up)
	}
	p.w.logf("%s: follows %s", p.n.name, up.Name)
	return nil
}

func (p *fakePG) Clone(ctx context.Context, up Upstream) error {
	if err := p.sleep(ctx, time.Second); err != nil {
		return err
	}
	src := p.w.node(up.Name)
	if src == nil || !src.pg.alive || !src.pg.ready {
		return errors.New("upstream not running")
	}
	p.empty, p.alive, p.wasPrimary, p.needsRecovery = false, false, false, false
	p.log, p.sysid, p.timeline, p.hist = slices.Clone(src.pg.log), src.pg.sysid, src.pg.timeline, slices.Clone(src.pg.hist)
	p.w.logf("%s: cloned from %s (wal %d)", p.n.name, up.Name, len(p.log))
	return nil
}

func (p *fakePG) Rewind(ctx context.Context, up Upstream) error {
	if err := p.sleep(ctx, 500*time.Millisecond); err != nil {
		return err
	}
	if p.alive {
		return errors.New("rewind: postgres is running")
	}
	src := p.w.node(up.Name)
	if src == nil || !src.pg.alive || !src.pg.ready {
		return errors.New("source not running")
	}
	i := 0
	for i < len(p.log) && i < len(src.pg.log) && p.log[i] == src.pg.log[i] {
		i++
	}
	p.log, p.wasPrimary, p.timeline, p.hist, p.needsRecovery = p.log[:i], false, src.pg.timeline, slices.Clone(src.pg.hist), false
	p.w.logf("%s: rewound to %d from %s", p.n.name, i, up.Name)
	return nil
}

func (p *fakePG) Wipe(ctx context.Context) error {
	if p.alive {
		return errors.New("wipe: postgres is running")
	}
	p.empty, p.log, p.sysid, p.needsRecovery = true, nil, "", false
	p.wipes++
	return nil
}

func (p *fakePG) Checkpoint(ctx context.Context) error {
	g := p.gen
	if err := p.sleep(ctx, 10*time.Millisecond+p.checkpointTime); err != nil {
		return err
	}
	p.checkpointTime = 0
	if p.gen != g {
		return errors.New("checkpoint: postgres died meanwhile")
	}
	return nil
}

func (p *fakePG) Restart(ctx context.Context) error {
	if !p.alive {
		return errors.New("restart: not running")
	}
	var up *Upstream
	if p.standby {
		up = &Upstream{Name: p.upstream}
	}
	if err := p.Stop(ctx, StopFast); err != nil {
		return err
	}
	return p.Start(ctx, up)
}

func (p *fakePG) Reload(ctx context.Context) error { return p.sleep(ctx, 5*time.Millisecond) }

func (p *fakePG) SetClusterParameters(ctx context.Context, params map[string]string) (bool, error) {
	return false, nil
}

func (p *fakePG) ShutdownCheckpoint(ctx context.Context) (wal.LSN, error) {
	if p.alive || p.needsRecovery {
		return 0, errors.New("shutdown checkpoint: not a clean shutdown")
	}
	return wal.LSN(len(p.log)), nil
}

func (p *fakePG) SyncSlots(ctx context.Context, want, keep []string) ([]string, []string, error) {
	return nil, nil, p.sleep(ctx, 2*time.Millisecond)
}

func (p *fakePG) SetSyncStandbys(ctx context.Context, names []string) error {
	if err := p.sleep(ctx, 10*time.Millisecond); err != nil {
		return err
	}
	p.syncNames = slices.Clone(names)
	return nil
}

func (p *fakePG) SyncStatus(ctx context.Context) (SyncStatus, error) {
	if err := p.sleep(ctx, 2*time.Millisecond); err != nil {
		return SyncStatus{}, err
	}
	if !p.alive || !p.ready || p.standby || p.mute {
		return SyncStatus{}, errors.New("not a primary that answers")
	}
	st := SyncStatus{Current: wal.LSN(len(p.log)), Sync: map[string]wal.LSN{}, Streaming: map[string]bool{}}
	for _, o := range p.syncStandbys() {
		st.Sync[o.name] = wal.LSN(len(o.pg.log))
	}
	for _, o := range p.w.nodes {
		if o.pg.streaming() && o.pg.upstream == p.n.name {
			st.Streaming[o.name] = true
		}
	}
	return st, nil
}

// syncStandbys are the standbys a commit on this primary waits for now:
// the named ones streaming from it (AnyStandby: the first streaming one).
func (p *fakePG) syncStandbys() []*simNode {
	var out []*simNode
	for _, o := range p.w.nodes {
		if !o.pg.streaming() || o.pg.upstream != p.n.name {
			continue
		}
		if slices.Contains(p.syncNames, o.name) || (slices.Equal(p.syncNames, []string{AnyStandby}) && len(out) == 0) {
			out = append(out, o)
		}
	}
	return out
}

func (p *fakePG) replicate() {
	if !p.alive || !p.ready || !p.standby || p.upstream == "" || p.frozen || !p.streaming() {
		return
	}
	up := p.w.node(p.upstream)
	if up == nil || !up.pg.alive || !up.pg.ready || !isPrefix(p.log, up.pg.log) {
		return
	}
	// Replicas do not always keep up: copy a random part of what is missing.
	missing := len(up.pg.log) - len(p.log)
	if missing > 0 {
		k := missing
		if p.w.rng.IntN(4) == 0 {
			k = p.w.rng.IntN(missing + 1)
		}
		p.log = append(p.log, up.pg.log[len(p.log):len(p.log)+k]...)
	}
	// A standby follows its upstream's timeline switch (it streams the
	// history file).
	if up.pg.timeline > p.timeline {
		p.timeline, p.hist = up.pg.timeline, slices.Clone(up.pg.hist)
	}
}

func isPrefix(a, b []int) bool {
	return len(a) <= len(b) && slices.Equal(a, b[:len(a)])
}

// --- the watchdog ---

// fakeWatchdog is one watchdog process: armed to an absolute deadline, it
// fences every process of the data directory when the deadline passes and
// keeps fencing what starts until it is armed or disarmed again; when its
// agent dies it fences at once (if armed) and exits. It has its own group:
// it can be frozen or killed apart from the agent.
type fakeWatchdog struct {
	n       *simNode
	g       *group
	armed   bool
	expired bool
	keep    bool
	ev      *event
	gone    bool
	// at is where it is armed to strike.
	at time.Time
}

func (w *world) startWatchdog(n *simNode) *fakeWatchdog {
	wd := &fakeWatchdog{n: n, g: &group{name: n.name + "-watchdog"}}
	n.wdProc = wd
	return wd
}

func (wd *fakeWatchdog) arm(at time.Time, keep bool) {
	s := wd.n.w.s
	s.cancel(wd.ev)
	wd.armed, wd.expired, wd.keep, wd.at = true, false, keep, at
	wd.ev = s.at(at, wd.g, wd.fire)
}

func (wd *fakeWatchdog) disarm() {
	wd.n.w.s.cancel(wd.ev)
	wd.armed, wd.expired, wd.ev = false, false, nil
}

func (wd *fakeWatchdog) fire() {
	w := wd.n.w
	if wd.gone || (!wd.armed && !wd.expired) {
		return
	}
	if wd.n.pg.fenceAll("fenced by the watchdog") {
		w.logf("%s: watchdog fenced postgres", wd.n.name)
		w.watchdogFences[wd.n.name]++
	}
	wd.armed, wd.expired = false, true
	wd.ev = w.s.at(w.s.now.Add(100*time.Millisecond), wd.g, wd.fire)
}

// agentGone is the end of the agent's pipe (kill -9 of the agent, or its
// whole host).
func (wd *fakeWatchdog) agentGone() {
	if wd.gone {
		return
	}
	if wd.g.frozen {
		wd.g.onThaw = append(wd.g.onThaw, wd.agentGone)
		return
	}
	if (wd.armed && !wd.keep) || wd.expired {
		if wd.n.pg.fenceAll("fenced by the orphaned watchdog") {
			wd.n.w.logf("%s: watchdog of a dead agent fenced postgres", wd.n.name)
		}
	}
	wd.exit()
}

func (wd *fakeWatchdog) exit() {
	wd.gone = true
	wd.n.w.s.cancel(wd.ev)
	wd.g.dead = true
}

// simWatchdog is the agent's client of its watchdog process: commands to
// a frozen watchdog wait in the pipe (and are acted on at thaw, the
// deadline being absolute); a dead one is started again.
type simWatchdog struct {
	n *simNode
	// fail makes every command fail (a watchdog that cannot start).
	fail bool
	last func(*fakeWatchdog)
}

func (c *simWatchdog) send(cmd func(*fakeWatchdog)) error {
	if c.fail {
		return errors.New("watchdog unavailable: cannot start")
	}
	wd := c.n.wdProc
	if wd == nil || wd.gone {
		wd = c.n.w.startWatchdog(c.n)
		c.n.w.logf("%s: watchdog restarted by its agent", c.n.name)
		if c.last != nil {
			c.last(wd)
		}
	}
	c.last = cmd
	if wd.g.frozen {
		wd.g.onThaw = append(wd.g.onThaw, func() { cmd(wd) })
		return nil
	}
	cmd(wd)
	return nil
}

func (c *simWatchdog) Arm(deadline time.Time, keep bool) error {
	return c.send(func(wd *fakeWatchdog) { wd.arm(deadline, keep) })
}

func (c *simWatchdog) Disarm() error {
	return c.send(func(wd *fakeWatchdog) { wd.disarm() })
}

// --- peers ---

// simFailsafe is a failsafe round over the simulated REST links: a dead,
// frozen or cut member does not answer within the peer timeout; a live
// one answers as its API would (ConfirmFailsafe).
type simFailsafe struct{ n *simNode }

func (sf simFailsafe) Confirm(ctx context.Context, ms []dcs.Member, leader string, ttl time.Duration) error {
	w := sf.n.w
	wait := 2 * time.Millisecond
	var err error
	for _, m := range ms {
		if m.Name == sf.n.name {
			continue
		}
		t := w.node(m.Name)
		switch {
		case t == nil || !t.alive || t.ag.frozen || w.restCut[[2]string{sf.n.name, t.name}]:
			wait = max(wait, sf.n.agent.s.PeerTimeout)
			if err == nil {
				err = fmt.Errorf("member %s: no answer", m.Name)
			}
		default:
			if e := t.agent.ConfirmFailsafe(leader, ttl); e != nil && err == nil {
				err = fmt.Errorf("member %s: %w", m.Name, e)
			}
		}
	}
	if e := w.s.sleep(ctx, wait); e != nil {
		return e
	}
	return err
}

// simPeers answers for the other agents as their REST APIs would: from
// their published snapshot; refused when the agent is dead, no answer
// within the timeout when it is frozen or the REST link is cut.
type simPeers struct{ n *simNode }

func (sp simPeers) Fetch(ctx context.Context, ms []dcs.Member) []Peer {
	w := sp.n.w
	wait := 2 * time.Millisecond
	var out []Peer
	for _, m := range ms {
		if m.Name == sp.n.name {
			continue
		}
		p := Peer{Name: m.Name, Priority: m.Priority, NoFailover: m.NoFailover}
		t := w.node(m.Name)
		switch {
		case t == nil || !t.alive:
		case t.ag.frozen || w.restCut[[2]string{sp.n.name, t.name}]:
			wait = max(wait, sp.n.agent.s.PeerTimeout)
		default:
			st := t.agent.Status()
			p.Reachable = true
			p.Unguarded = st.Unguarded != ""
			p.Mute = st.State == "starting" || st.State == "unresponsive"
			p.Stale = !st.ClusterUnlocked
			p.Running = st.State == "running"
			p.Primary = st.Role == "primary" && (st.State == "running" || st.State == "unresponsive" || st.State == "starting" || st.State == "stopping")
			if p.Running {
				p.Timeline, p.WAL = st.Timeline, st.WALPosition
			}
		}
		out = append(out, p)
	}
	_ = w.s.sleep(ctx, wait)
	return out
}

// simProbe asks a node's PostgreSQL directly, as a client would.
type simProbe struct{ n *simNode }

func (sp simProbe) Probe(ctx context.Context, hostPort string) ProbeResult {
	w := sp.n.w
	_ = w.s.sleep(ctx, 2*time.Millisecond)
	name, _, _ := strings.Cut(hostPort, ":")
	t := w.node(name)
	switch {
	case t == nil || !t.pg.alive || t.pg.frozen:
		return ProbeNoAnswer
	case !t.pg.ready || t.pg.mute:
		return ProbeRunning
	case t.pg.standby:
		return ProbeStandby
	}
	return ProbePrimary
}

// simHooks records completed switchover handovers (the old leader fires
// "switchover" with details "to <target>" once it released the key).
type simHooks struct{ n *simNode }

func (h simHooks) Fire(event string, ok bool, details string) {
	w := h.n.w
	if event == "switchover" && ok && len(details) > 3 && details[:3] == "to " {
		w.handedOver = details[3:]
		w.handedLog = slices.Clone(h.n.pg.log)
	}
}
