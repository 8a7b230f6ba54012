package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
)

// The simulated cluster: N agents over the in-memory DCS, each with a fake
// PostgreSQL whose WAL is a log of row IDs, a fake watchdog and fake peers,
// driven by a fake clock from a seeded random schedule of kills, freezes,
// restarts, etcd outages and switchovers. After every agent step it checks
// the guarantees. A failing seed is printed; replay it with
//
//	go test ./agent -run TestSimulatedCluster -sim.seed N -v
var (
	simSeed  = flag.Int64("sim.seed", -1, "replay one simulation seed, with a trace")
	simSeeds = flag.Int("sim.seeds", defaultSimSeeds, "number of seeded schedules TestSimulatedCluster runs (1000; 150 under -race)")
)

const simTick = 100 * time.Millisecond

type world struct {
	t      testing.TB
	rng    *rand.Rand
	now    time.Time
	mem    *dcs.MemoryCluster
	nodes  []*simNode
	dyn    config.Dynamic
	nextID int
	acked  []int // rows acknowledged to the client, in order
	trace  []string
	failed string
	// switchovers counts completed planned switchovers.
	switchovers int
	// handedOver is the target of the last completed handover, until it
	// is promoted.
	handedOver string
	// handedLog is the old primary's WAL at the handover: every row it
	// acknowledged must be on the new primary.
	handedLog []int
}

type simNode struct {
	w        *world
	name     string
	priority int
	agent    *Agent
	alive    bool // agent process running
	frozen   bool // agent process stopped (SIGSTOP)
	nextStep time.Time
	pg       *fakePG
	wd       *fakeWatchdog
}

// fakePG models PostgreSQL as a log of row IDs: the WAL position is the
// log's length, a standby copies its upstream's log while its own is a
// prefix of it, and a promotion starts a new timeline.
type fakePG struct {
	n          *simNode
	empty      bool
	running    bool
	recovery   bool
	timeline   uint32
	log        []int
	upstream   string // member name
	sysid      string
	wasPrimary bool
	syncNames  []string // synchronous_standby_names, as the agent set it
}

// simHooks records completed switchover handovers (the old leader fires
// "switchover" with details "to <target>" once it released the key).
type simHooks struct {
	w *world
	n *simNode
}

func (h simHooks) Fire(event string, ok bool, details string) {
	if event == "switchover" && ok && strings.HasPrefix(details, "to ") {
		h.w.handedOver = strings.TrimPrefix(details, "to ")
		h.w.handedLog = slices.Clone(h.n.pg.log)
	}
}

type fakeWatchdog struct {
	n        *simNode
	deadline time.Time // zero: disarmed
}

func (c *world) Now() time.Time { return c.now }

// After lets time pass for the world (replication, lease expiry, watchdogs)
// while the calling agent waits; the other agents do not step meanwhile.
func (c *world) After(d time.Duration) <-chan time.Time {
	c.advance(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *world) logf(format string, args ...any) {
	c.trace = append(c.trace, fmt.Sprintf("%8.1fs ", c.now.Sub(simStart).Seconds())+fmt.Sprintf(format, args...))
}

var simStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (c *world) node(name string) *simNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// advance moves the clock, then lets the world react: etcd expires leases,
// watchdogs fence, standbys replicate.
func (c *world) advance(d time.Duration) {
	c.now = c.now.Add(d)
	c.mem.Expire()
	for _, n := range c.nodes {
		if wd := n.wd; !wd.deadline.IsZero() && !c.now.Before(wd.deadline) {
			if n.pg.running {
				c.logf("%s: watchdog fences postgres", n.name)
			}
			n.pg.crash()
			wd.deadline = time.Time{}
		}
	}
	for _, n := range c.nodes {
		n.pg.replicate()
	}
	c.check("after time passed")
}

// writable lists the nodes whose PostgreSQL accepts writes.
func (c *world) writable() []string {
	var out []string
	for _, n := range c.nodes {
		if n.pg.running && !n.pg.recovery {
			out = append(out, n.name)
		}
	}
	return out
}

// check asserts the guarantees that must hold at every moment.
func (c *world) check(when string) {
	if c.failed != "" {
		return
	}
	if w := c.writable(); len(w) > 1 {
		c.failed = fmt.Sprintf("%s: %d writable primaries %v", when, len(w), w)
	}
}

func (c *world) write() {
	w := c.writable()
	if len(w) != 1 {
		return
	}
	n := c.node(w[0])
	c.nextID++
	n.pg.log = append(n.pg.log, c.nextID)
	// Synchronous replication: the commit is acknowledged only once the
	// standbys it waits for have flushed it; otherwise the client waits
	// (and the model never acknowledges it).
	waitFor := n.pg.syncStandbys()
	if len(n.pg.syncNames) > 0 && len(waitFor) < len(n.pg.syncNames) {
		return
	}
	for _, o := range waitFor {
		o.pg.log = slices.Clone(n.pg.log)
	}
	c.acked = append(c.acked, c.nextID)
}

// syncStandbys are the standbys a commit on this primary waits for now:
// the named ones streaming from it ("*": the first streaming one).
func (p *fakePG) syncStandbys() []*simNode {
	var out []*simNode
	for _, o := range p.n.w.nodes {
		if !o.pg.streaming() || o.pg.upstream != p.n.name {
			continue
		}
		if slices.Contains(p.syncNames, o.name) || (slices.Equal(p.syncNames, []string{"*"}) && len(out) == 0) {
			out = append(out, o)
		}
	}
	return out
}

func (p *fakePG) SetSyncStandbys(ctx context.Context, names []string) error {
	p.syncNames = slices.Clone(names)
	return nil
}

func (p *fakePG) SyncStatus(ctx context.Context) (SyncStatus, error) {
	if !p.running || p.recovery {
		return SyncStatus{}, errors.New("not a primary")
	}
	st := SyncStatus{Current: uint64(len(p.log)), Sync: map[string]uint64{}}
	for _, o := range p.syncStandbys() {
		st.Sync[o.name] = uint64(len(o.pg.log))
	}
	return st, nil
}

func (p *fakePG) crash() {
	if p.running && !p.recovery {
		p.wasPrimary = true
	}
	p.running = false
}

func (p *fakePG) replicate() {
	if !p.running || !p.recovery || p.upstream == "" {
		return
	}
	up := p.n.w.node(p.upstream)
	if up == nil || !up.pg.running || !isPrefix(p.log, up.pg.log) {
		return
	}
	// Replicas do not always keep up: copy a random part of what is missing.
	missing := len(up.pg.log) - len(p.log)
	if missing > 0 {
		k := missing
		if p.n.w.rng.IntN(4) == 0 {
			k = p.n.w.rng.IntN(missing + 1)
		}
		p.log = append(p.log, up.pg.log[len(p.log):len(p.log)+k]...)
	}
}

func isPrefix(a, b []int) bool {
	return len(a) <= len(b) && slices.Equal(a, b[:len(a)])
}

func (p *fakePG) streaming() bool {
	if !p.running || !p.recovery || p.upstream == "" {
		return false
	}
	up := p.n.w.node(p.upstream)
	return up != nil && up.pg.running && isPrefix(p.log, up.pg.log)
}

func (p *fakePG) State(ctx context.Context) (PGState, error) {
	s := PGState{DataEmpty: p.empty, Running: p.running, InRecovery: p.recovery && p.running,
		Timeline: p.timeline, WAL: uint64(len(p.log)), Replayed: uint64(len(p.log)),
		Streaming: p.streaming(), SystemID: p.sysid, WasPrimary: !p.running && p.wasPrimary}
	if p.running {
		s.State = "running"
	} else if !p.empty {
		s.State = "stopped"
	}
	if s.InRecovery && p.upstream != "" {
		s.Upstream = p.upstream + ":5432"
	}
	if p.empty {
		s = PGState{DataEmpty: true}
	}
	return s, nil
}

func (p *fakePG) Bootstrap(ctx context.Context) error {
	if !p.empty {
		return errors.New("data directory not empty")
	}
	p.empty, p.running, p.recovery, p.timeline, p.sysid = false, true, false, 1, "7000000000000000001"
	p.n.w.logf("%s: bootstrapped", p.n.name)
	return nil
}

func (p *fakePG) Start(ctx context.Context, up *Upstream) error {
	if p.empty {
		return errors.New("no data directory")
	}
	if p.running {
		return nil
	}
	p.running = true
	if up == nil {
		p.recovery = false
		p.n.w.logf("%s: started as primary", p.n.name)
	} else {
		p.recovery, p.upstream, p.wasPrimary = true, up.Name, false
		p.n.w.logf("%s: started as replica of %q", p.n.name, up.Name)
	}
	p.n.w.check(p.n.name + " started postgres")
	return nil
}

func (p *fakePG) Stop(ctx context.Context, mode StopMode) error {
	if p.running {
		p.n.w.logf("%s: postgres stopped (%s)", p.n.name, mode)
		if mode != StopImmediate && !p.recovery {
			// A clean shutdown of a primary: the WAL senders send
			// everything up to the shutdown checkpoint to the connected
			// standbys before the server exits.
			for _, o := range p.n.w.nodes {
				if o.pg.running && o.pg.recovery && o.pg.upstream == p.n.name && isPrefix(o.pg.log, p.log) {
					o.pg.log = slices.Clone(p.log)
				}
			}
		}
	}
	p.crash()
	return nil
}

func (p *fakePG) Promote(ctx context.Context) error {
	w := p.n.w
	if !p.running || !p.recovery {
		return errors.New("not a running standby")
	}
	// The guarantee: no reachable eligible member is ahead of the one
	// being promoted (checked against the truth, not against what the
	// agent was told).
	// Only an operator's explicit failover may pick a member that is behind.
	// "Reachable" means a registered member (its key alive in the DCS) that
	// answers: a node cut off from etcd long enough for its member key to
	// expire is not asked, exactly as documented in the README.
	manual := false
	c, err := w.mem.Client("observer", time.Second).Cluster(ctx)
	if err != nil {
		return fmt.Errorf("observer: %w", err)
	}
	if c.Failover != nil && c.Failover.Candidate == p.n.name && c.Failover.Kind == "failover" {
		manual = true
	}
	sync := w.dyn.SynchronousMode
	if sync && (c.Failover == nil || !c.Failover.Force) {
		// The synchronous-mode guarantee: the promoted node has every
		// acknowledged commit.
		if id := w.missing(p.log); id >= 0 && w.failed == "" {
			w.failed = fmt.Sprintf("synchronous mode: %s promoted without acknowledged row %d", p.n.name, id)
		}
	}
	for _, o := range w.nodes {
		if o == p.n || !o.alive || o.frozen || !o.pg.running || o.priority <= 0 || manual || c.Member(o.name) == nil {
			continue
		}
		if sync && (c.Sync == nil || (c.Sync.Leader != o.name && !slices.Contains(c.Sync.SyncStandby, o.name))) {
			continue // only synchronous standbys compete
		}
		if len(o.pg.log) > len(p.log) && w.failed == "" {
			w.failed = fmt.Sprintf("%s promoted at WAL %d while reachable eligible %s is at %d", p.n.name, len(p.log), o.name, len(o.pg.log))
		}
	}
	p.recovery = false
	p.timeline++
	p.upstream = ""
	w.logf("%s: promoted (timeline %d, wal %d)", p.n.name, p.timeline, len(p.log))
	w.check(p.n.name + " promoted")
	return nil
}

func (p *fakePG) Follow(ctx context.Context, up Upstream) error {
	if p.running && !p.recovery {
		p.crash()
		p.running, p.recovery = true, true
	}
	p.upstream = up.Name
	p.n.w.logf("%s: follows %s", p.n.name, up.Name)
	return nil
}

func (p *fakePG) Clone(ctx context.Context, up Upstream) error {
	src := p.n.w.node(up.Name)
	if src == nil || !src.pg.running {
		return errors.New("upstream not running")
	}
	p.empty, p.running, p.wasPrimary = false, false, false
	p.log, p.sysid, p.timeline = slices.Clone(src.pg.log), src.pg.sysid, src.pg.timeline
	p.n.w.logf("%s: cloned from %s (wal %d)", p.n.name, up.Name, len(p.log))
	return nil
}

func (p *fakePG) Rewind(ctx context.Context, up Upstream) error {
	src := p.n.w.node(up.Name)
	if src == nil || !src.pg.running {
		return errors.New("source not running")
	}
	i := 0
	for i < len(p.log) && i < len(src.pg.log) && p.log[i] == src.pg.log[i] {
		i++
	}
	p.log, p.wasPrimary, p.timeline = p.log[:i], false, src.pg.timeline
	p.n.w.logf("%s: rewound to %d from %s", p.n.name, i, up.Name)
	return nil
}

func (p *fakePG) Wipe(ctx context.Context) error {
	p.empty, p.log, p.running, p.sysid = true, nil, false, ""
	return nil
}

func (p *fakePG) Checkpoint(ctx context.Context) error { return nil }

func (p *fakePG) Restart(ctx context.Context) error { return nil }

func (p *fakePG) Reload(ctx context.Context) error { return nil }

func (p *fakePG) ShutdownCheckpoint(ctx context.Context) (uint64, error) {
	return uint64(len(p.log)), nil
}

func (p *fakePG) SyncSlots(ctx context.Context, names []string) error { return nil }

func (wd *fakeWatchdog) Arm(d time.Duration) error {
	wd.deadline = wd.n.w.now.Add(d)
	return nil
}

func (wd *fakeWatchdog) Disarm() error {
	wd.deadline = time.Time{}
	return nil
}

// simPeers answers for the other agents as their REST APIs would: not at
// all when the agent is dead or frozen.
type simPeers struct{ w *world }

func (sp simPeers) Fetch(ctx context.Context, ms []dcs.Member) []Peer {
	var out []Peer
	for _, m := range ms {
		n := sp.w.node(m.Name)
		p := Peer{Name: m.Name}
		if n != nil && n.alive && !n.frozen {
			p.Reachable = true
			p.Running = n.pg.running
			p.Primary = n.pg.running && !n.pg.recovery
			if n.pg.running {
				p.WAL = uint64(len(n.pg.log))
			}
			p.Priority = n.priority
		}
		out = append(out, p)
	}
	return out
}

func newWorld(t testing.TB, seed int64, nodes int) *world {
	w := &world{t: t, rng: rand.New(rand.NewPCG(uint64(seed), 99)), now: simStart}
	w.mem = dcs.NewMemoryCluster(w.Now)
	w.dyn = config.DefaultDynamic()
	if w.rng.IntN(2) == 0 {
		w.dyn.TTL = config.Duration(5 * time.Second)
	}
	if w.rng.IntN(3) == 0 {
		w.dyn.SynchronousMode = true
		w.dyn.SynchronousModeStrict = w.rng.IntN(2) == 0
	}
	for i := range nodes {
		n := &simNode{w: w, name: fmt.Sprintf("node%d", i+1), priority: 100}
		if i > 0 && w.rng.IntN(4) == 0 {
			n.priority = w.rng.IntN(3) * 50 // sometimes 0: never promoted
		}
		n.pg = &fakePG{n: n, empty: true}
		n.wd = &fakeWatchdog{n: n}
		w.nodes = append(w.nodes, n)
		w.start(n)
	}
	return w
}

// start runs a new agent process on n (a fresh lease, fresh loop state).
func (c *world) start(n *simNode) {
	s := Settings{
		Node:           Node{Name: n.name, Priority: n.priority, UsePgRewind: true, SafetyMargin: 2 * time.Second},
		Scope:          "sim",
		ConnectAddress: n.name + ":5432",
		APIURL:         "http://" + n.name + ":8008",
		Initial:        c.dyn,
	}
	log := hclog.NewNullLogger()
	if *simSeed >= 0 {
		log = hclog.New(&hclog.LoggerOptions{Name: n.name, Output: traceWriter{c, n.name}, Level: hclog.Info})
	}
	n.agent = New(s, Deps{
		DCS:      c.mem.Client(n.name, c.dyn.TTL.D()),
		Postgres: n.pg,
		Watchdog: n.wd,
		Peers:    simPeers{c},
		Hooks:    simHooks{c, n},
		Clock:    c,
	}, log)
	n.alive, n.frozen = true, false
	n.nextStep = c.now.Add(time.Duration(c.rng.IntN(1000)) * time.Millisecond)
}

type traceWriter struct {
	w    *world
	name string
}

func (tw traceWriter) Write(b []byte) (int, error) {
	tw.w.trace = append(tw.w.trace, "          "+strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// event applies one random fault or operator action.
func (c *world) event() {
	n := c.nodes[c.rng.IntN(len(c.nodes))]
	switch r := c.rng.IntN(100); {
	case r < 20: // power loss: agent and postgres die
		if n.alive {
			c.logf("EVENT %s: kill -9 agent and postmaster", n.name)
			n.alive = false
			n.pg.crash()
			n.wd.deadline = time.Time{}
		}
	case r < 30: // only the agent dies; its watchdog lives on
		if n.alive {
			c.logf("EVENT %s: kill -9 agent", n.name)
			n.alive = false
		}
	case r < 45:
		if n.alive && !n.frozen {
			c.logf("EVENT %s: agent frozen (SIGSTOP)", n.name)
			n.frozen = true
		}
	case r < 60:
		switch {
		case n.frozen:
			c.logf("EVENT %s: agent thawed (SIGCONT)", n.name)
			n.frozen = false
		case !n.alive:
			c.logf("EVENT %s: agent restarted", n.name)
			c.start(n)
		}
	case r < 70:
		if n.pg.running {
			c.logf("EVENT %s: postgres crashed", n.name)
			n.pg.crash()
		}
	case r < 80:
		c.logf("EVENT %s: etcd unreachable", n.name)
		c.mem.SetReachable(n.name, false)
	case r < 90:
		c.logf("EVENT %s: etcd reachable", n.name)
		c.mem.SetReachable(n.name, true)
	default:
		cl, err := c.mem.Client("operator", time.Second).Cluster(context.Background())
		if err == nil && cl.Leader != nil && cl.Failover == nil {
			f := dcs.Failover{Kind: "switchover", Leader: cl.Leader.Name, RequestedAt: c.now}
			if c.rng.IntN(2) == 0 {
				f.Candidate = n.name
			}
			c.logf("EVENT switchover requested from %s to %q", f.Leader, f.Candidate)
			_ = c.mem.Client("operator", time.Second).SetFailover(context.Background(), f, 0)
		}
	}
}

// heal ends every fault so the cluster can be checked for recovery.
func (c *world) heal() {
	c.logf("HEAL")
	for _, n := range c.nodes {
		c.mem.SetReachable(n.name, true)
		if !n.alive {
			c.start(n)
		}
		n.frozen = false
	}
}

func (c *world) stepAgents() {
	for _, i := range c.rng.Perm(len(c.nodes)) {
		n := c.nodes[i]
		if !n.alive || n.frozen || c.now.Before(n.nextStep) {
			continue
		}
		d := n.agent.Step(context.Background())
		if d.Action != ActWait && d.Action != ActHeartbeat {
			c.logf("%s: %s", n.name, d)
		}
		c.check(n.name + " " + d.Action.String())
		if d.Action == ActAcquire && c.handedOver == n.name && n.pg.running && !n.pg.recovery {
			// A planned switchover: every acknowledged row must be here.
			c.switchovers++
			c.handedOver = ""
			if !isPrefix(c.handedLog, n.pg.log) && c.failed == "" {
				c.failed = fmt.Sprintf("switchover to %s lost acknowledged rows: old primary had %d, new has %d", n.name, len(c.handedLog), len(n.pg.log))
			}
		}
		n.nextStep = c.now.Add(c.dyn.LoopWait.D())
	}
}

// missing is the first acknowledged row not in log, or -1.
func (c *world) missing(log []int) int {
	have := make(map[int]bool, len(log))
	for _, id := range log {
		have[id] = true
	}
	for _, id := range c.acked {
		if !have[id] {
			return id
		}
	}
	return -1
}

// run simulates the schedule: faults for a while, then healing, then a
// check that the cluster recovered to exactly one primary.
func (c *world) run(faultTime, healTime time.Duration) {
	end := simStart.Add(faultTime)
	for c.now.Before(end) && c.failed == "" {
		if c.rng.IntN(100) < 3 {
			c.event()
		}
		c.write()
		c.stepAgents()
		c.advance(simTick)
	}
	if c.failed != "" {
		return
	}
	c.heal()
	end = c.now.Add(healTime)
	for c.now.Before(end) && c.failed == "" {
		c.write()
		c.stepAgents()
		c.advance(simTick)
	}
	if c.failed == "" && len(c.writable()) != 1 {
		c.failed = fmt.Sprintf("no single primary %s after healing: writable %v", healTime, c.writable())
	}
}

func TestSimulatedCluster(t *testing.T) {
	if *simSeed >= 0 {
		w := newWorld(t, *simSeed, 3)
		w.run(90*time.Second, 60*time.Second)
		for _, l := range w.trace {
			t.Log(l)
		}
		if w.failed != "" {
			t.Fatalf("seed %d: %s", *simSeed, w.failed)
		}
		return
	}
	start := time.Now()
	var switchovers, rows int
	for seed := int64(0); seed < int64(*simSeeds); seed++ {
		w := newWorld(t, seed, 3)
		w.run(90*time.Second, 60*time.Second)
		if w.failed != "" {
			tail := w.trace[max(0, len(w.trace)-40):]
			t.Fatalf("seed %d: %s\nlast events:\n%s\nreplay: go test ./agent -run TestSimulatedCluster -sim.seed %d -v",
				seed, w.failed, strings.Join(tail, "\n"), seed)
		}
		switchovers += w.switchovers
		rows += len(w.acked)
	}
	t.Logf("%d seeded schedules in %s: %d planned switchovers, %d acknowledged rows", *simSeeds, time.Since(start).Round(time.Millisecond), switchovers, rows)
	if switchovers == 0 {
		t.Fatal("no schedule completed a switchover: the simulation does not exercise it")
	}
}
