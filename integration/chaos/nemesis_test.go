//go:build integration

package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// nemesis is one kind of fault: apply starts it on a cluster whose
// leader is given, returning the heal; hold is how long it lasts.
type nemesis struct {
	kind string
	// mayFailover: it cuts the leader from etcd, kills or freezes one of
	// its processes, or switches over; any other fault that moves the
	// leader is a false failover.
	mayFailover bool
	// mayFailoverAt, when set, decides mayFailover from the cluster's
	// timing.
	mayFailoverAt func(c *cluster) bool
	planned       bool
	hold          func(c *cluster) time.Duration
	apply         func(f *faultRun) (heal func())
	// during, when set, runs halfway through the hold and notes what the
	// fault did (that a cut cuts).
	during func(f *faultRun)
}

// faultRun is what a nemesis works on.
type faultRun struct {
	c      *cluster
	leader *node
	rng    *rand.Rand
	target string
	note   []string
	// ineffective says why the fault did not do what its name says.
	ineffective string
}

func (f *faultRun) notef(format string, args ...any) {
	f.note = append(f.note, fmt.Sprintf(format, args...))
}

func (f *faultRun) replica() *node {
	var rs []*node
	for _, n := range f.c.nodes {
		if n != f.leader {
			rs = append(rs, n)
		}
	}
	return rs[f.rng.IntN(len(rs))]
}

func secsOf(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func fixed(d time.Duration) func(*cluster) time.Duration {
	return func(*cluster) time.Duration { return d }
}

// pastTTL is a hold past the lease: ttl + 3 s.
func pastTTL(c *cluster) time.Duration { return secsOf(c.o.ttl + 3) }

func kill(pid int) {
	if pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// killAgent kills a node's agent; the heal starts it again.
func (f *faultRun) killAgent(n *node) func() {
	n.agent.Kill()
	n.agent.Wait(10 * time.Second)
	return func() { n.start() }
}

// cut blackholes a proxy both ways until the heal (which drops the
// connections it held, as a partition's end that resets them would).
func (c *cluster) cut(proxies ...string) func() {
	for _, p := range proxies {
		c.addToxic(p, `{"name":"cut_up","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`)
		c.addToxic(p, `{"name":"cut_down","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)
	}
	return func() {
		for _, p := range proxies {
			c.removeToxic(p, "cut_up")
			c.removeToxic(p, "cut_down")
		}
	}
}

// latency delays every answer on the proxies.
func (c *cluster) latency(d time.Duration, proxies ...string) func() {
	for _, p := range proxies {
		c.addToxic(p, fmt.Sprintf(`{"name":"latency","type":"latency","stream":"downstream","attributes":{"latency":%d}}`, d.Milliseconds()))
	}
	return func() {
		for _, p := range proxies {
			c.removeToxic(p, "latency")
		}
	}
}

// etcdLinks are the proxies from the nodes (all when none is named) to
// every etcd member.
func (c *cluster) etcdLinks(ns ...*node) []string {
	if len(ns) == 0 {
		ns = c.nodes
	}
	var ps []string
	for _, n := range ns {
		for j := range c.etcd {
			ps = append(ps, fmt.Sprintf("etcd-%d-%d", n.index+1, j+1))
		}
	}
	return ps
}

// killEtcd kills members; the heal restarts them on their data.
func (c *cluster) killEtcd(ms ...*member) func() {
	for _, m := range ms {
		m.proc.Kill()
		m.proc.Wait(10 * time.Second)
	}
	return func() {
		for _, m := range ms {
			m.start(c.t)
		}
	}
}

// switchover asks the leader's API for a switchover to any healthy
// replica; a refusal (412, 503: impossible under this fault) is noted,
// not an error.
func (f *faultRun) switchover() {
	body := fmt.Sprintf(`{"leader":%q}`, f.leader.name)
	hc := &http.Client{Timeout: 60 * time.Second}
	resp, err := hc.Post(f.leader.api("/switchover"), "application/json", strings.NewReader(body))
	if err != nil {
		f.notef("switchover: %v", err)
		return
	}
	resp.Body.Close()
	f.notef("switchover: %d", resp.StatusCode)
}

var nemeses = []nemesis{
	{kind: "kill-postmaster", mayFailover: true, hold: fixed(0), apply: func(f *faultRun) func() {
		kill(f.leader.postmasterPID())
		return func() {}
	}},
	{kind: "kill-agent", mayFailover: true, hold: fixed(3 * time.Second), apply: func(f *faultRun) func() {
		return f.killAgent(f.leader)
	}},
	// The agent replaces its watchdog: no failover.
	{kind: "kill-watchdog", hold: fixed(0), apply: func(f *faultRun) func() {
		kill(f.leader.watchdogPID())
		return func() {}
	}},
	// A host that dies takes every process with it: all are stopped
	// first (so the agent cannot start a new watchdog, nor a backend
	// commit, in between), then killed, backends included.
	{kind: "kill-host", mayFailover: true, hold: pastTTL, apply: func(f *faultRun) func() {
		n := f.leader
		pids := append([]int{n.agent.PID(), n.watchdogPID(), n.postmasterPID()}, n.dataDirProcs()...)
		for _, pid := range pids {
			if pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGSTOP)
			}
		}
		for _, pid := range append(pids, n.dataDirProcs()...) {
			kill(pid)
		}
		n.agent.Wait(10 * time.Second)
		return func() { n.start() }
	}},
	// ttl/2 plus up to loop_wait since the last renewal: past the 2 s
	// safety margin only when ttl is short (at ttl 5, 3.5 s > 3 s).
	{kind: "freeze-agent-short", mayFailoverAt: func(c *cluster) bool { return c.o.ttl/2+c.o.loopWait >= c.o.ttl-2 }, hold: func(c *cluster) time.Duration { return secsOf(c.o.ttl / 2) }, apply: func(f *faultRun) func() {
		_ = f.leader.agent.Pause()
		return f.leader.resume
	}},
	{kind: "freeze-agent-long", mayFailover: true, hold: pastTTL, apply: func(f *faultRun) func() {
		_ = f.leader.agent.Pause()
		return f.leader.resume
	}},
	{kind: "freeze-agent-watchdog", mayFailover: true, hold: pastTTL, apply: func(f *faultRun) func() {
		if pid := f.leader.watchdogPID(); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGSTOP)
		}
		_ = f.leader.agent.Pause()
		return f.leader.resume
	}},
	{kind: "cut-leader-etcd", mayFailover: true, hold: func(c *cluster) time.Duration { return secsOf(c.o.ttl + 5) }, apply: func(f *faultRun) func() {
		return f.c.cut(f.c.etcdLinks(f.leader)...)
	}},
	{kind: "cut-replica-etcd", hold: func(c *cluster) time.Duration { return secsOf(c.o.ttl + 5) }, apply: func(f *faultRun) func() {
		r := f.replica()
		f.target = r.name
		return f.c.cut(f.c.etcdLinks(r)...)
	}},
	{kind: "cut-replication", hold: fixed(15 * time.Second), apply: func(f *faultRun) func() {
		sw := ReplSwitch(f.c.replSwitchName(f.leader.index))
		sw.Set(true)
		return func() { sw.Set(false) }
	}, during: func(f *faultRun) {
		_, r := f.c.state()
		f.notef("mid-fault: %d of 2 replicas streaming", len(r))
		if len(r) > 0 {
			f.ineffective = fmt.Sprintf("%d replicas still streaming halfway through the cut", len(r))
		}
	}},
	{kind: "etcd-latency-spike", hold: fixed(3 * time.Second), apply: func(f *faultRun) func() {
		f.target = "all etcd links"
		return f.c.latency(1500*time.Millisecond, f.c.etcdLinks()...)
	}},
	{kind: "etcd-latency-sustained", hold: fixed(20 * time.Second), apply: func(f *faultRun) func() {
		f.target = "all etcd links"
		return f.c.latency(800*time.Millisecond, f.c.etcdLinks()...)
	}},
	{kind: "kill-etcd-member", hold: fixed(10 * time.Second), apply: func(f *faultRun) func() {
		m := f.c.etcd[f.rng.IntN(len(f.c.etcd))]
		f.target = m.name
		return f.c.killEtcd(m)
	}},
	// Without failsafe_mode the leader must stop: etcd cannot say whether
	// it still holds the key, so a leader change is allowed.
	{kind: "etcd-quorum-loss", mayFailover: true, hold: func(c *cluster) time.Duration { return secsOf(c.o.ttl + 5) }, apply: func(f *faultRun) func() {
		i := f.rng.IntN(3)
		a, b := f.c.etcd[i], f.c.etcd[(i+1)%3]
		f.target = a.name + "," + b.name
		return f.c.killEtcd(a, b)
	}},
	// With failsafe_mode every member confirms the leader over REST while
	// etcd is away: it stays primary, so a leader change is a false
	// failover here.
	{kind: "etcd-quorum-loss-failsafe", hold: func(c *cluster) time.Duration { return secsOf(c.o.ttl + 5) }, apply: func(f *faultRun) func() {
		f.c.setFailsafe(f, true)
		i := f.rng.IntN(3)
		a, b := f.c.etcd[i], f.c.etcd[(i+1)%3]
		f.target = a.name + "," + b.name
		heal := f.c.killEtcd(a, b)
		return func() {
			heal()
			f.c.setFailsafe(f, false)
		}
	}},
	{kind: "rest-partition", hold: fixed(15 * time.Second), apply: func(f *faultRun) func() {
		n := f.c.nodes[f.rng.IntN(3)]
		f.target = n.name
		return f.c.cut(fmt.Sprintf("rest-%d", n.index+1))
	}},
	{kind: "switchover", mayFailover: true, planned: true, hold: fixed(0), apply: func(f *faultRun) func() {
		f.switchover()
		return func() {}
	}},
	{kind: "switchover-during-fault", mayFailover: true, hold: fixed(5 * time.Second), apply: func(f *faultRun) func() {
		var heal func()
		switch k := f.rng.IntN(4); k {
		case 0:
			heal = f.c.latency(800*time.Millisecond, f.c.etcdLinks()...)
			f.notef("under 800 ms etcd latency")
		case 1:
			r := f.replica()
			heal = f.c.cut(f.c.etcdLinks(r)...)
			f.notef("%s cut from etcd", r.name)
		case 2:
			r := f.replica()
			heal = f.c.cut(fmt.Sprintf("rest-%d", r.index+1))
			f.notef("%s's REST API cut", r.name)
		default:
			m := f.c.etcd[f.rng.IntN(3)]
			heal = f.c.killEtcd(m)
			f.notef("etcd %s killed", m.name)
		}
		f.switchover()
		return heal
	}},
}

func nemesisByKind(kind string) (nemesis, bool) {
	for _, n := range nemeses {
		if n.kind == kind {
			return n, true
		}
	}
	return nemesis{}, false
}

// runFault applies one nemesis, holds it, heals it and waits for the
// cluster to converge, recording all of it.
// It returns the converged cluster's primary (nil if it did not).
func (c *cluster) runFault(ctx context.Context, rec *recorder, seq int, nm nemesis, rng *rand.Rand, leader *node) (Fault, *node) {
	f := &faultRun{c: c, leader: leader, rng: rng, target: leader.name}
	may := nm.mayFailover
	if nm.mayFailoverAt != nil {
		may = nm.mayFailoverAt(c)
	}
	fault := Fault{Seq: seq, Kind: nm.kind, MayFailover: may, Planned: nm.planned,
		LeaderBefore: leader.name, TLBefore: leader.timeline()}
	hold := nm.hold(c)
	fault.Start = rec.now()
	heal := nm.apply(f)
	end := time.After(hold)
	if nm.during != nil {
		select {
		case <-ctx.Done():
		case <-time.After(hold / 2):
		}
		nm.during(f)
	}
	select {
	case <-ctx.Done():
	case <-end:
	}
	heal()
	fault.Heal = rec.now()
	fault.Target = f.target
	p, at, err := c.converged(ctx, 60*time.Second)
	if err != nil {
		fault.ConvergeErr = err.Error()
	} else {
		fault.Converged = at.Sub(rec.start)
		fault.LeaderAfter, fault.TLAfter = p.name, p.timeline()
	}
	fault.Note = strings.Join(f.note, "; ")
	fault.Ineffective = f.ineffective
	return fault, p
}

// setFailsafe sets failsafe_mode through the leader's API (retrying while
// etcd comes back, bounded) and waits until every agent has read it.
func (c *cluster) setFailsafe(f *faultRun, on bool) {
	body := fmt.Sprintf(`{"failsafe_mode": %v}`, on)
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		req, _ := http.NewRequest(http.MethodPatch, f.leader.api("/config"), strings.NewReader(body))
		resp, err := c.hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
			err = fmt.Errorf("PATCH /config: %d", resp.StatusCode)
		}
		if time.Now().After(deadline) || i > 300 {
			// Left on, it would change every later fault.
			f.ineffective = fmt.Sprintf("failsafe_mode %v not set: %v", on, err)
			return
		}
		time.Sleep(100 * time.Millisecond) // a retry pace, not a synchronization
	}
	for i := 0; time.Now().Before(deadline) && i < 300; i++ {
		seen := 0
		for _, n := range c.nodes {
			if v, ok := n.status()["failsafe_mode"].(bool); ok && v == on {
				seen++
			}
		}
		if seen == len(c.nodes) {
			return
		}
		time.Sleep(100 * time.Millisecond) // polled until the deadline above
	}
	f.ineffective = fmt.Sprintf("failsafe_mode %v not seen by every agent", on)
}
