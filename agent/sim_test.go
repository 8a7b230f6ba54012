package agent

import (
	"context"
	"encoding/json"
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
// PostgreSQL whose WAL is a log of row IDs, its own watchdog process and
// fake peers, on the deterministic scheduler of simsched_test.go, driven by
// a seeded random schedule of faults: kills of agents, postmasters and
// watchdogs, freezes, PostgreSQL that does not answer, slow and cut etcd
// links, REST-only partitions, long checkpoints and crash recoveries,
// switchovers and restarts. After every step of every process it checks the
// guarantees. A failing seed is printed; replay it with
//
//	go test ./agent -run TestSimulatedCluster -sim.seed N -v
var (
	simSeed  = flag.Int64("sim.seed", -1, "replay one simulation seed, with a trace")
	simSeeds = flag.Int("sim.seeds", defaultSimSeeds, "number of seeded schedules TestSimulatedCluster runs (1000; 150 under -race)")
)

const simTick = 100 * time.Millisecond

var simStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type world struct {
	t testing.TB
	// logLines counts each node's log lines (simOpts.countLogs).
	logLines map[string]int
	rng      *rand.Rand
	s        *sched
	mem      *dcs.MemoryCluster
	nodes    []*simNode
	dyn      config.Dynamic
	nextID   int
	acked    []int // rows acknowledged to the client, in order
	trace    []string
	failed   string
	// verbose: trace the agents' own log lines (a replayed seed).
	verbose bool

	// The network, as faults set it.
	etcdDown map[string]bool
	etcdSlow map[string]time.Duration
	// refuseMove: etcd refuses the node's new lease (a grant it will not
	// make) after renewing the current one, as a real move does.
	refuseMove map[string]bool
	restCut    map[[2]string]bool

	// watchdogFences counts the watchdog fences of a running PostgreSQL.
	watchdogFences map[string]int
	// switchovers counts completed planned switchovers.
	switchovers int
	// handedOver is the target of the last completed handover, until it
	// is promoted; handedLog the old primary's WAL then.
	handedOver string
	handedLog  []int
	// faults counts injected faults by kind.
	faults map[string]int
	// systems counts bootstraps (each a new system identifier).
	systems int
	// registered is since when each member's key exists.
	registered map[string]time.Time
	// newestLog is the WAL of the newest timeline: the log of the last
	// node promoted (or bootstrapped), as it went on taking commits.
	newestLog  []int
	newestNode *simNode
	// orphanLife is how long a busy backend outlives a killed postmaster
	// (its statement runs on, then commits).
	orphanLife time.Duration
	// stepCheck is a scenario's own invariant, checked with the others
	// after every step ("" when it holds).
	stepCheck func() string
}

type simNode struct {
	w        *world
	name     string
	priority int
	agent    *Agent
	ag       *group // the agent process (its loop and helpers)
	alive    bool   // the agent process runs
	pg       *fakePG
	wd       *simWatchdog
	wdProc   *fakeWatchdog
	settings Settings
	// stepStart is when its agent's current (or last) step began, and
	// rowsAtStep how many rows each node had then.
	stepStart  time.Time
	rowsAtStep map[string]int
}

func (w *world) now() time.Time { return w.s.now }

func (w *world) logf(format string, args ...any) {
	w.trace = append(w.trace, fmt.Sprintf("%8.3fs ", w.s.now.Sub(simStart).Seconds())+fmt.Sprintf(format, args...))
}

func (w *world) node(name string) *simNode {
	for _, n := range w.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// committers lists the nodes on which a client's commit can succeed now.
func (w *world) committers() []string {
	var out []string
	for _, n := range w.nodes {
		if n.pg.canCommit() {
			out = append(out, n.name)
		}
	}
	return out
}

func (w *world) fail(format string, args ...any) {
	if w.failed == "" {
		w.failed = fmt.Sprintf(format, args...)
		w.logf("VIOLATION: %s", w.failed)
	}
}

// check asserts what must hold at every moment.
func (w *world) check(when string) {
	if w.failed != "" {
		return
	}
	if c := w.committers(); len(c) > 1 {
		w.fail("%s: %d nodes accept commits %v", when, len(c), c)
	}
	if w.stepCheck != nil {
		if msg := w.stepCheck(); msg != "" {
			w.fail("%s: %s", when, msg)
		}
	}
}

// leaderKey is who holds the leader key in the store right now.
func (w *world) leaderKey() string {
	name, _ := w.leaderKeyRev()
	return name
}

// leaderKeyRev is the holder of the leader key and the key's revision.
func (w *world) leaderKeyRev() (string, int64) { return w.mem.LeaderKey() }

// checkPromotion: no reachable eligible member is ahead of the one being
// promoted (against the truth, not what the agent was told), and in
// synchronous mode it has every acknowledged commit. "Reachable" means a
// registered member (its key alive) whose agent answers the promoting
// node's REST requests.
func (w *world) checkPromotion(n *simNode) {
	c, err := w.mem.Client("observer", time.Second).Cluster(context.Background())
	if err != nil {
		w.fail("observer: %v", err)
		return
	}
	manual := c.Failover != nil && c.Failover.Candidate == n.name && c.Failover.Kind == "failover"
	sync := w.dyn.SynchronousMode
	if sync && (c.Failover == nil || !c.Failover.Force) {
		if id := w.missing(n.pg.log); id >= 0 {
			w.fail("synchronous mode: %s promoted without acknowledged row %d", n.name, id)
		}
	}
	for _, o := range w.nodes {
		// A member registered, or whose server came up, after the
		// candidate observed the cluster could not have been asked (a
		// server that is down does not hold the race: README).
		if since, ok := w.registered[o.name]; !ok || since.After(n.stepStart) || o.pg.readySince.After(n.stepStart) {
			continue
		}
		if o == n || manual || !o.alive || o.ag.frozen || w.restCut[[2]string{n.name, o.name}] ||
			!o.pg.alive || !o.pg.ready || o.pg.mute || o.priority <= 0 || c.Member(o.name) == nil {
			continue
		}
		if sync && (c.Sync == nil || (c.Sync.Leader != o.name && !slices.Contains(c.Sync.SyncStandby, o.name))) {
			continue // only synchronous standbys compete
		}
		// What each has of the newest timeline's WAL. A diverged node (rows
		// past where its timeline left the newest one's history) is no
		// candidate: it cannot be promoted without losing the newest
		// timeline, nor rewound without a primary to rewind from.
		if !isPrefix(o.pg.log, w.newestLog) {
			continue
		}
		// Rows it received after the candidate's step began (streamed from
		// a member that came back meanwhile) could not have been known.
		known := min(len(o.pg.log), n.rowsAtStep[o.name])
		if have := commonPrefix(n.pg.log, w.newestLog); known > have {
			w.fail("%s promoted with %d rows of the newest timeline (of %d) while reachable eligible %s had %d when its step began",
				n.name, have, len(n.pg.log), o.name, known)
		}
	}
}

// write commits one row on the node that accepts commits, if exactly one
// does (the check catches more than one).
func (w *world) write() {
	c := w.committers()
	if len(c) != 1 {
		return
	}
	n := w.node(c[0])
	w.nextID++
	n.pg.log = append(n.pg.log, w.nextID)
	if n == w.newestNode && isPrefix(w.newestLog, n.pg.log) {
		w.newestLog = append(w.newestLog, w.nextID)
	}
	if !n.pg.alive || w.leaderKey() != n.name {
		// Committed, but not by the cluster's leader (a backend orphaned
		// by a dead postmaster, a bootstrap that never took the key): a
		// client routed by the health checks never sees this commit, and
		// the no-loss guarantees are about the leader's commits. More than
		// one node accepting commits is what check catches.
		return
	}
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
	w.acked = append(w.acked, w.nextID)
}

func commonPrefix(a, b []int) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

// missing is the first acknowledged row not in log, or -1.
func (w *world) missing(log []int) int {
	have := make(map[int]bool, len(log))
	for _, id := range log {
		have[id] = true
	}
	for _, id := range w.acked {
		if !have[id] {
			return id
		}
	}
	return -1
}

type simOpts struct {
	nodes      int
	ttl        time.Duration
	sync       bool
	strict     bool
	priorities []int
	// required: watchdog.mode required.
	required bool
	// cascade: node3 streams from node2 (tags.replicatefrom).
	cascade bool
	// countLogs: count each node's log lines in world.logLines.
	countLogs bool
}

func newWorld(t testing.TB, seed int64, o simOpts) *world {
	w := &world{
		t: t, rng: rand.New(rand.NewPCG(uint64(seed), 99)), s: newSched(simStart),
		etcdDown: map[string]bool{}, etcdSlow: map[string]time.Duration{}, restCut: map[[2]string]bool{}, refuseMove: map[string]bool{},
		watchdogFences: map[string]int{}, faults: map[string]int{}, verbose: *simSeed >= 0,
		registered: map[string]time.Time{}, orphanLife: 4 * time.Second,
	}
	if o.countLogs {
		w.logLines = map[string]int{}
	}
	w.mem = dcs.NewMemoryCluster(w.now)
	w.dyn = config.DefaultDynamic()
	if o.ttl > 0 {
		w.dyn.TTL = config.Duration(o.ttl)
	}
	w.dyn.SynchronousMode, w.dyn.SynchronousModeStrict = o.sync, o.strict
	w.s.after = w.check
	for i := range max(o.nodes, 1) {
		n := &simNode{w: w, name: fmt.Sprintf("node%d", i+1), priority: 100}
		if i < len(o.priorities) {
			n.priority = o.priorities[i]
		}
		n.pg = &fakePG{n: n, w: w, empty: true}
		n.wd = &simWatchdog{n: n}
		n.settings = Settings{
			Node:             Node{Name: n.name, Priority: n.priority, UsePgRewind: true, UseSlots: true, SafetyMargin: 2 * time.Second},
			Scope:            "sim",
			ConnectAddress:   n.name + ":5432",
			APIURL:           "http://" + n.name + ":8008",
			Initial:          w.dyn,
			WatchdogRequired: o.required,
		}
		if o.cascade && i == 2 {
			n.settings.Node.ReplicateFrom = "node2"
			n.settings.Tags = map[string]string{"replicatefrom": "node2"}
		}
		w.nodes = append(w.nodes, n)
	}
	for _, n := range w.nodes {
		w.start(n, time.Duration(w.rng.IntN(1000))*time.Millisecond)
	}
	return w
}

// randomWorld draws a cluster shape from the seed.
func randomWorld(t testing.TB, seed int64) *world {
	r := rand.New(rand.NewPCG(uint64(seed), 7))
	o := simOpts{nodes: 3, ttl: 10 * time.Second}
	if r.IntN(2) == 0 {
		o.ttl = 5 * time.Second
	}
	if r.IntN(3) == 0 {
		o.sync, o.strict = true, r.IntN(2) == 0
	}
	o.priorities = []int{100, 100, 100}
	for i := 1; i < 3; i++ {
		if r.IntN(4) == 0 {
			o.priorities[i] = r.IntN(3) * 50 // sometimes 0: never promoted
		}
	}
	o.cascade = r.IntN(3) == 0
	return newWorld(t, seed, o)
}

// start runs a new agent process on n (a fresh lease, fresh loop state)
// after delay. Like the real agent, it cannot start its watchdog while the
// watchdog of its previous incarnation lives: it waits for it to go.
func (w *world) start(n *simNode, delay time.Duration) { w.startWith(n, delay, nil, nil) }

// startWith is start with n's PostgreSQL and etcd client wrapped (a nil
// wrapper wraps nothing).
func (w *world) startWith(n *simNode, delay time.Duration, wrapPG func(Postgres) Postgres, wrapDCS func(DCS) DCS) {
	g := &group{name: n.name + "-agent"}
	n.ag, n.alive = g, true
	w.s.spawn(n.name, g, func() {
		_ = w.s.sleep(context.Background(), delay)
		for n.wdProc != nil && !n.wdProc.gone {
			_ = w.s.sleep(context.Background(), 200*time.Millisecond)
		}
		w.startWatchdog(n)
		log := hclog.NewNullLogger()
		if w.logLines != nil {
			log = hclog.New(&hclog.LoggerOptions{Name: n.name, Output: lineCounter{w, n.name}, Level: hclog.Info})
		}
		if w.verbose {
			log = hclog.New(&hclog.LoggerOptions{Name: n.name, Output: traceWriter{w}, Level: hclog.Info})
		}
		var d DCS = simDCS{n: n, m: w.mem.Client(n.name, w.dyn.TTL.D())}
		if wrapDCS != nil {
			d = wrapDCS(d)
		}
		var p Postgres = n.pg
		if wrapPG != nil {
			p = wrapPG(p)
		}
		n.agent = New(n.settings, Deps{
			DCS:      d,
			Postgres: p,
			Watchdog: n.wd,
			Peers:    simPeers{n},
			Failsafe: simFailsafe{n},
			Probe:    simProbe{n},
			Hooks:    simHooks{n},
			Clock:    simClock{w},
		}, log)
		ctx := context.Background()
		for {
			holder, rev := w.leaderKeyRev()
			n.stepStart = w.s.now
			n.rowsAtStep = map[string]int{}
			for _, o := range w.nodes {
				n.rowsAtStep[o.name] = len(o.pg.log)
			}
			d := n.agent.Step(ctx)
			if d.Action != ActWait && d.Action != ActHeartbeat {
				w.logf("%s: %s", n.name, d)
			}
			// Leadership is published only as the step found it: a key that
			// another member held all through the step (a lost race) is not
			// this node's. (One that changed hands during the step may be
			// published until the next step.)
			if st := n.agent.Status(); st.IsLeader && holder != "" && holder != n.name {
				if h, r := w.leaderKeyRev(); h == holder && r == rev {
					w.fail("%s publishes itself as leader while %s held the leader key all through its step", n.name, holder)
				}
			}
			_ = w.s.sleep(ctx, n.agent.loopWait())
		}
	})
}

// lineCounter counts a node's log lines (hclog writes one per call).
type lineCounter struct {
	w    *world
	name string
}

func (c lineCounter) Write(b []byte) (int, error) {
	c.w.logLines[c.name]++
	return len(b), nil
}

type traceWriter struct{ w *world }

func (tw traceWriter) Write(b []byte) (int, error) {
	tw.w.trace = append(tw.w.trace, "          "+strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// --- faults ---

// killAgent is kill -9 of the agent process; its watchdog sees the pipe
// close.
func (w *world) killAgent(n *simNode) {
	if !n.alive {
		return
	}
	n.alive = false
	w.s.killGroup(n.ag)
	if n.wdProc != nil {
		n.wdProc.agentGone()
	}
}

// hostLoss: agent, watchdog and postmaster die together.
func (w *world) hostLoss(n *simNode) {
	if n.wdProc != nil {
		n.wdProc.exit()
	}
	w.killAgent(n)
	n.pg.fenceAll("host lost")
}

func (w *world) freezeAgent(n *simNode) {
	if n.alive {
		w.s.freeze(n.ag)
	}
}

// freezeWatchdog stops the watchdog too, PostgreSQL running on: nothing on
// the host can fence it. Only scripted scenarios do this (a random
// schedule would then also kill the postmaster and leave a busy backend
// that no one can reach).
func (w *world) freezeWatchdog(n *simNode) {
	if n.wdProc != nil {
		w.s.freeze(n.wdProc.g)
	}
}

// freezeHost stops every process of the host, PostgreSQL's included.
func (w *world) freezeHost(n *simNode) {
	w.freezeAgent(n)
	w.freezeWatchdog(n)
	n.pg.frozen = true
}

// thaw resumes the host's processes: the watchdog first (its deadline
// may have passed), then the agent, then PostgreSQL.
func (w *world) thaw(n *simNode) {
	if n.wdProc != nil {
		w.s.thaw(n.wdProc.g)
	}
	if n.alive {
		w.s.thaw(n.ag)
	}
	n.pg.frozen = false
}

// after runs f once d has passed.
func (w *world) after(d time.Duration, f func()) { w.s.at(w.s.now.Add(d), nil, f) }

// event applies one random fault or operator action.
func (w *world) event() {
	n := w.nodes[w.rng.IntN(len(w.nodes))]
	count := func(kind string) {
		w.faults[kind]++
		w.logf("EVENT %s: %s", n.name, kind)
	}
	switch r := w.rng.IntN(110); {
	case r < 10:
		if n.alive {
			count("host lost (kill -9 agent, watchdog, postmaster)")
			w.hostLoss(n)
		}
	case r < 18:
		if n.alive && !n.pg.frozen {
			count("kill -9 agent")
			w.killAgent(n)
		}
	case r < 28:
		// Not with its watchdog dead: then nothing on the host could fence
		// PostgreSQL (a scripted scenario covers that).
		if n.alive && !n.ag.frozen && n.wdProc != nil && !n.wdProc.gone {
			count("agent frozen (SIGSTOP)")
			w.freezeAgent(n)
		}
	case r < 32:
		if n.alive && !n.ag.frozen && !n.pg.frozen {
			count("host frozen (agent, watchdog and postgres)")
			w.freezeHost(n)
		}
	case r < 44:
		switch {
		case n.alive && (n.ag.frozen || n.pg.frozen):
			count("thawed (SIGCONT)")
			w.thaw(n)
		case !n.alive:
			count("agent restarted")
			w.thaw(n)
			w.start(n, 0)
		}
	case r < 50:
		// A busy backend outliving its postmaster can be killed only from
		// its host: not generated where nothing there could fence (the
		// agent dead and no watchdog left, as after a paused cluster's
		// agent was stopped for maintenance: README, "edges").
		if n.pg.alive {
			guarded := n.alive || (n.wdProc != nil && !n.wdProc.gone)
			count("postmaster killed (a busy backend lives on)")
			n.pg.die("postmaster killed", guarded)
		}
	case r < 54:
		if n.pg.alive && n.pg.ready && !n.pg.mute {
			count("postgres stops answering the agent")
			n.pg.mute = true
			pg, gen := n.pg, n.pg.gen
			w.after(time.Duration(5+w.rng.IntN(25))*time.Second, func() {
				if pg.gen == gen {
					pg.mute = false
					w.logf("HEAL %s: postgres answers again", n.name)
				}
			})
		}
	case r < 62:
		count("etcd unreachable")
		w.etcdDown[n.name] = true
	case r < 68:
		count("etcd reachable")
		delete(w.etcdDown, n.name)
	case r < 72:
		count("etcd link slow (800 ms)")
		w.etcdSlow[n.name] = 800 * time.Millisecond
		w.after(time.Duration(20+w.rng.IntN(40))*time.Second, func() { delete(w.etcdSlow, n.name) })
	case r < 75:
		count("etcd latency spike (1.5 s)")
		w.etcdSlow[n.name] = 1500 * time.Millisecond
		w.after(3*time.Second, func() { delete(w.etcdSlow, n.name) })
	case r < 79:
		o := w.nodes[w.rng.IntN(len(w.nodes))]
		if o != n {
			count("REST cut from " + o.name)
			k := [2]string{o.name, n.name}
			if w.rng.IntN(2) == 0 {
				k = [2]string{n.name, o.name}
			}
			w.restCut[k] = true
			w.after(time.Duration(10+w.rng.IntN(20))*time.Second, func() { delete(w.restCut, k) })
		}
	case r < 82:
		count("next checkpoint takes 7 s, next crash recovery 12 s")
		n.pg.checkpointTime, n.pg.recoveryTime = 7*time.Second, 12*time.Second
	case r < 85:
		if n.alive && !n.ag.frozen && n.wdProc != nil && !n.wdProc.gone && !n.wdProc.g.frozen {
			count("kill -9 watchdog")
			n.wdProc.exit()
		}
	case r < 87:
		if n.alive && n.agent != nil {
			count("restart requested")
			n.agent.restarts.add()
		}
	case r < 88:
		if n.alive && n.agent != nil {
			count("reinitialize requested")
			n.agent.reinits.add()
		}
	case r < 94:
		w.togglePause()
	case r < 98:
		cl, err := w.mem.Client("operator", time.Second).Cluster(context.Background())
		if err == nil && cl.Failover == nil {
			f := dcs.Failover{Kind: "failover", Candidate: n.name, RequestedAt: w.s.now, Force: w.rng.IntN(3) == 0}
			if cl.Leader != nil {
				f.Kind, f.Leader = "switchover", cl.Leader.Name // as POST /failover does with a leader
			}
			count(fmt.Sprintf("manual %s requested (force %v)", f.Kind, f.Force))
			_ = w.mem.Client("operator", time.Second).SetFailover(context.Background(), f, 0)
		}
	case r < 102:
		// An operator starts a stopped former primary by hand, its agent
		// dead, and writes: it diverges on its old timeline with a higher
		// LSN than the replicas promoted meanwhile.
		if !n.alive && !n.pg.alive && !n.pg.empty && n.pg.wasPrimary && !n.pg.needsRecovery {
			count("a stopped former primary written by hand")
			for range 50 + w.rng.IntN(500) {
				w.nextID++
				n.pg.log = append(n.pg.log, w.nextID)
				if n == w.newestNode && len(w.newestLog) == len(n.pg.log)-1 {
					w.newestLog = append(w.newestLog, w.nextID)
				}
			}
		}
	case r < 104:
		// edit-config of ttl: every keeper moves its keys onto a new lease.
		ttl := []time.Duration{5 * time.Second, 6 * time.Second, 8 * time.Second, 10 * time.Second}[w.rng.IntN(4)]
		if w.editDynamic(func(d *config.Dynamic) { d.TTL = config.Duration(ttl) }) {
			count(fmt.Sprintf("ttl changed to %s", ttl))
		}
	default:
		cl, err := w.mem.Client("operator", time.Second).Cluster(context.Background())
		if err == nil && cl.Leader != nil && cl.Failover == nil {
			f := dcs.Failover{Kind: "switchover", Leader: cl.Leader.Name, RequestedAt: w.s.now}
			if w.rng.IntN(2) == 0 {
				f.Candidate = n.name
			}
			w.faults["switchover"]++
			w.logf("EVENT switchover requested from %s to %q", f.Leader, f.Candidate)
			_ = w.mem.Client("operator", time.Second).SetFailover(context.Background(), f, 0)
		}
	}
}

// togglePause pauses or resumes the cluster, as `pgwarden pause`/`resume`.
func (w *world) togglePause() {
	var on bool
	if w.editDynamic(func(d *config.Dynamic) { d.Pause = !d.Pause; on = d.Pause }) {
		w.faults[fmt.Sprintf("pause %v", on)]++
		w.logf("EVENT cluster pause %v", on)
	}
}

// editDynamic changes the stored dynamic configuration as edit-config
// does; it reports whether it was written.
func (w *world) editDynamic(edit func(*config.Dynamic)) bool {
	op := w.mem.Client("operator", time.Second)
	cl, err := op.Cluster(context.Background())
	if err != nil || cl.Config == nil {
		return false
	}
	dyn, err := config.ParseDynamic(cl.Config)
	if err != nil {
		return false
	}
	edit(&dyn)
	raw, err := json.Marshal(dyn)
	if err != nil {
		return false
	}
	return op.SetConfig(context.Background(), raw, cl.ConfigRevision) == nil
}

// heal ends every fault so the cluster can be checked for recovery.
func (w *world) heal() {
	w.logf("HEAL")
	if cl, err := w.mem.Client("operator", time.Second).Cluster(context.Background()); err == nil && cl.Config != nil {
		if dyn, err := config.ParseDynamic(cl.Config); err == nil && dyn.Pause {
			w.togglePause()
		}
	}
	for _, n := range w.nodes {
		w.logf("  %s: pg alive %v ready %v standby %v frozen %v upstream %q wal %d timeline %d", n.name, n.pg.alive, n.pg.ready, n.pg.standby, n.pg.frozen, n.pg.upstream, len(n.pg.log), n.pg.timeline)
	}
	clear(w.etcdDown)
	clear(w.etcdSlow)
	clear(w.restCut)
	for _, n := range w.nodes {
		n.pg.mute = false
		w.thaw(n)
		if !n.alive {
			w.start(n, 0)
		}
	}
}

// tick is the world's own process: time passes for leases, standbys
// replicate, the client writes, and (while faults run) one may strike.
func (w *world) tick(faults *bool) {
	var step func()
	step = func() {
		w.mem.Expire()
		w.trackMembers()
		for _, n := range w.nodes {
			n.pg.replicate()
		}
		w.write()
		if *faults && w.rng.IntN(100) < 3 {
			w.event()
		}
		w.checkHandover()
		w.after(simTick, step)
	}
	w.after(simTick, step)
}

func (w *world) trackMembers() {
	names := w.mem.MemberNames()
	for name := range w.registered {
		if !slices.Contains(names, name) {
			delete(w.registered, name)
		}
	}
	for _, name := range names {
		if _, ok := w.registered[name]; !ok {
			w.registered[name] = w.s.now
		}
	}
}

// checkHandover: once the target of a planned switchover runs as primary,
// every row the old primary acknowledged must be there.
func (w *world) checkHandover() {
	if w.handedOver == "" {
		return
	}
	n := w.node(w.handedOver)
	if n.pg.alive && n.pg.ready && !n.pg.standby {
		w.switchovers++
		w.handedOver = ""
		if !isPrefix(w.handedLog, n.pg.log) {
			w.fail("switchover to %s lost acknowledged rows: old primary had %d, new has %d", n.name, len(w.handedLog), len(n.pg.log))
		}
	}
}

// run simulates the schedule: faults for a while, then healing, then a
// check that the cluster recovered to exactly one primary.
func (w *world) run(faultTime, healTime time.Duration) {
	faults := true
	w.tick(&faults)
	stop := func() bool { return w.failed != "" }
	w.s.runUntil(simStart.Add(faultTime), stop)
	if w.failed == "" {
		faults = false
		w.heal()
		w.s.runUntil(w.s.now.Add(healTime), stop)
		if w.failed == "" && len(w.committers()) != 1 {
			w.fail("no single primary %s after healing: accepting commits %v", healTime, w.committers())
		}
	}
	w.s.shutdown()
}

func (w *world) report(t testing.TB, seed int64) {
	t.Helper()
	tail := w.trace[max(0, len(w.trace)-60):]
	t.Fatalf("seed %d: %s\nlast events:\n%s\nreplay: go test ./agent -run TestSimulatedCluster -sim.seed %d -v",
		seed, w.failed, strings.Join(tail, "\n"), seed)
}

func TestSimulatedCluster(t *testing.T) {
	if *simSeed >= 0 {
		w := randomWorld(t, *simSeed)
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
	faults := map[string]int{}
	for seed := int64(0); seed < int64(*simSeeds); seed++ {
		w := randomWorld(t, seed)
		w.run(90*time.Second, 60*time.Second)
		if w.failed != "" {
			w.report(t, seed)
		}
		switchovers += w.switchovers
		rows += len(w.acked)
		for k, v := range w.faults {
			faults[k] += v
		}
	}
	t.Logf("%d seeded schedules in %s: %d planned switchovers, %d acknowledged rows, 0 violations", *simSeeds, time.Since(start).Round(time.Millisecond), switchovers, rows)
	kinds := make([]string, 0, len(faults))
	for k := range faults {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		t.Logf("  %6d  %s", faults[k], k)
	}
	if switchovers == 0 {
		t.Fatal("no schedule completed a switchover: the simulation does not exercise it")
	}
}
