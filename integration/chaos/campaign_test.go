//go:build integration

package chaos

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/integration/harness"
)

var (
	flagFaults = flag.Int("chaos.faults", 10, "faults in the campaign")
	flagSeed   = flag.Uint64("chaos.seed", 1, "seed of the fault schedule (0: from the clock, printed)")
	flagSync   = flag.Bool("chaos.sync", false, "run with synchronous_mode: every acknowledged row must survive")
	flagTTL    = flag.Float64("chaos.ttl", 10, "cluster ttl in seconds")
	flagKinds  = flag.String("chaos.kinds", "", "comma-separated fault kinds (default: all)")
	flagReport = flag.String("chaos.report", "", "write the JSON report to this file too")
	flagBusy   = flag.Duration("chaos.busy", 8*time.Second, "length of a busy statement (calibrated on the cluster)")
)

const plantEnv = "PGWARDEN_PLANT_BIN"

// TestMain also builds the planted binary (the fence reduced to killing
// the postmaster, -tags chaosplant) for the test that proves the checker
// sees what that costs.
func TestMain(m *testing.M) {
	var cleanup func()
	if os.Getenv(plantEnv) == "" && os.Getenv("PGWARDEN_TEST_CHILD") == "" {
		dir, err := os.MkdirTemp("", "pgwarden-plant-")
		if err == nil {
			_ = os.Chmod(dir, 0o755)
			bin := filepath.Join(dir, "pgwarden")
			cmd := exec.Command("go", "build", "-tags", "chaosplant", "-o", bin, "./cmd/pgwarden")
			cmd.Dir = harness.ModuleRoot()
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if cmd.Run() == nil {
				os.Setenv(plantEnv, bin)
			}
			cleanup = func() { os.RemoveAll(dir) }
		}
	}
	code := harness.Main(m, harness.WithBinary)
	if cleanup != nil {
		cleanup()
	}
	os.Exit(code)
}

type campaign struct {
	faults int
	seed   uint64
	sync   bool
	ttl    float64
	kinds  []nemesis
	busy   time.Duration
	// freshBusy waits, before each fault, for the leader's busy statement
	// to have just started, so one is in flight for the whole fault.
	freshBusy bool
}

func campaignFromFlags(t *testing.T) campaign {
	cp := campaign{faults: *flagFaults, seed: *flagSeed, sync: *flagSync, ttl: *flagTTL, busy: *flagBusy}
	if cp.seed == 0 {
		cp.seed = uint64(time.Now().UnixNano())
	}
	if *flagKinds == "" {
		cp.kinds = nemeses
	} else {
		for _, k := range strings.Split(*flagKinds, ",") {
			nm, ok := nemesisByKind(strings.TrimSpace(k))
			if !ok {
				var all []string
				for _, n := range nemeses {
					all = append(all, n.kind)
				}
				t.Fatalf("-chaos.kinds: no fault kind %q (kinds: %s)", k, strings.Join(all, ", "))
			}
			cp.kinds = append(cp.kinds, nm)
		}
	}
	return cp
}

// TestChaos runs the campaign the flags describe (make test: 10 faults of
// every kind, seed 1; make chaos: FAULTS, SEED, SYNC, TTL, KINDS) and fails
// on any violation, or on a lost row in synchronous mode.
func TestChaos(t *testing.T) {
	cp := campaignFromFlags(t)
	r := runCampaign(t, cp, "")
	if len(r.Violations) > 0 || (cp.sync && r.Lost > 0) {
		t.Fail()
	}
}

// TestChaosCatchesPlantedFence: with the fence reduced to killing the
// postmaster (a build tag, never shipped), a busy backend on the killed
// agent's primary lives on and commits after the new primary's first
// write; the checker must report that overlap.
func TestChaosCatchesPlantedFence(t *testing.T) {
	bin := os.Getenv(plantEnv)
	if bin == "" {
		t.Fatal("the planted binary (go build -tags chaosplant ./cmd/pgwarden) was not built: see the output above")
	}
	kill, _ := nemesisByKind("kill-agent")
	cp := campaign{faults: 1, seed: 7, ttl: 5, kinds: []nemesis{kill}, busy: 20 * time.Second, freshBusy: true}
	r := runCampaign(t, cp, bin)
	for _, v := range r.Violations {
		if v.Rule == "overlap" {
			t.Logf("caught: %s", v.Detail)
			return
		}
	}
	t.Fatalf("the planted fence left a backend running, yet the checker reported no overlap: %+v", r.Violations)
}

// runCampaign starts a cluster (with binary bin, or the tests' own),
// runs the faults with the workload on, and checks the record.
func runCampaign(t *testing.T, cp campaign, bin string) Report {
	if bin != "" {
		t.Setenv("PGWARDEN_BIN", bin)
	}
	retry := 3.0
	if cp.ttl < 10 {
		retry = (cp.ttl - 1) / 2
	}
	began := time.Now()
	t.Logf("chaos: seed %d, %d faults, ttl %g, sync %v", cp.seed, cp.faults, cp.ttl, cp.sync)
	c := newCluster(t, opts{ttl: cp.ttl, loopWait: 1, retry: retry, sync: cp.sync})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, _, err := c.converged(ctx, 120*time.Second)
	if err != nil {
		t.Fatalf("the cluster did not come up: %v", err)
	}
	c.setup(p)
	spin := c.calibrate(p, cp.busy)
	t.Logf("chaos: cluster up in %s, primary %s; busy statements spin %d (about %s)", time.Since(began).Round(time.Millisecond), p.name, spin, cp.busy)

	rec := &recorder{start: time.Now()}
	wctx, stopWriters := context.WithCancel(ctx)
	wg := c.workload(wctx, rec, spin)
	harness.WaitFor(t, 30*time.Second, "the writers' first acknowledgements", func() (bool, error) {
		n := rec.acked()
		return n >= 20, fmt.Errorf("%d acknowledged", n)
	})

	rng := rand.New(rand.NewPCG(cp.seed, 0x6368616f73))
	var faults []Fault
	leader := p
	for i := range cp.faults {
		nm := cp.kinds[rng.IntN(len(cp.kinds))]
		if leader == nil {
			// The last fault's heal did not converge: give it one more
			// bound before giving up on the campaign.
			if leader, _, err = c.converged(ctx, 120*time.Second); err != nil {
				t.Logf("chaos: fault %d not started: the cluster has not converged: %v", i, err)
				break
			}
		}
		if cp.freshBusy {
			c.waitFreshBusy(t, rec, leader)
		}
		var f Fault
		f, leader = c.runFault(ctx, rec, i, nm, rng, leader)
		faults = append(faults, f)
		t.Logf("chaos: fault %d %s target=%s seed=%d start=%s heal=%s converged=%s leader %s/tl%d -> %s/tl%d %s%s",
			i, f.Kind, f.Target, cp.seed, secs(f.Start), secs(f.Heal), secs(f.Converged),
			f.LeaderBefore, f.TLBefore, f.LeaderAfter, f.TLAfter, f.Note, errNote(f.ConvergeErr))
		// A few seconds of ordinary work between faults; then, if the
		// cluster moved meanwhile, the next fault waits for it to settle.
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
		if ps, rs := c.state(); len(ps) != 1 || ps[0] != leader || len(rs) != 2 {
			leader = nil
		}
	}
	stopWriters()
	wg.Wait()
	final, _, err := c.converged(ctx, 60*time.Second)
	var present map[int64]bool
	if err == nil {
		present, err = c.finalRows(final)
	}
	if err != nil {
		t.Errorf("chaos: the final primary could not be read: %v", err)
	}
	r := Check(rec.writes(), faults, present, cp.sync)
	c.print(t, cp, r, rec.writes())
	t.Logf("chaos: campaign took %s", time.Since(began).Round(time.Second))
	return r
}

func errNote(e string) string {
	if e == "" {
		return ""
	}
	return " NOT CONVERGED: " + e
}

// calibrate sizes the busy statement: how far chaos_spin counts in d.
func (c *cluster) calibrate(p *node, d time.Duration) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.dsn())
	must(c.t, err)
	defer conn.Close(ctx)
	const n = 2_000_000
	start := time.Now()
	_, err = conn.Exec(ctx, "SELECT chaos_spin($1)", n)
	must(c.t, err)
	took := time.Since(start)
	return int64(float64(n) * d.Seconds() / took.Seconds())
}

// waitFreshBusy waits (bounded) until the leader's busy statement was
// sent less than a second ago.
func (c *cluster) waitFreshBusy(t *testing.T, rec *recorder, leader *node) {
	src := "busy-" + leader.name
	harness.WaitFor(t, 90*time.Second, "a fresh busy statement on "+leader.name, func() (bool, error) {
		ws := rec.writes()
		var last time.Duration
		for _, w := range ws {
			if w.Src == src && w.Acked() && w.Ack > last {
				last = w.Ack
			}
		}
		// The next one starts a second after the last ended.
		age := rec.now() - last
		return last > 0 && age > 1100*time.Millisecond && age < 2*time.Second, fmt.Errorf("last busy ended %s ago", age)
	})
}

// print writes the table, the violations with the acknowledgements
// around each, the JSON report and, last, the line scripts read.
func (c *cluster) print(t *testing.T, cp campaign, r Report, ws []Write) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s", r.Table())
	fmt.Fprintf(&b, "epochs (timeline node first-ack):")
	for _, e := range r.Epochs {
		fmt.Fprintf(&b, " tl%d:%s@%s", e.Timeline, e.Node, secs(e.First))
	}
	fmt.Fprintf(&b, "\nacknowledged %d, lost %d (by fault %v), lost across planned switchovers %d\n", r.Acked, r.Lost, r.LostByFault, r.LostPlanned)
	for _, v := range r.Violations {
		kind := ""
		if v.Fault >= 0 && v.Fault < r.Faults {
			kind = fmt.Sprintf(" (fault %d)", v.Fault)
		}
		fmt.Fprintf(&b, "VIOLATION %s%s seed %d: %s\n%s", v.Rule, kind, cp.seed, v.Detail, Around(ws, v.At, 2*time.Second, 24))
	}
	if len(r.Violations) > 0 {
		for _, n := range c.nodes {
			fmt.Fprintf(&b, "--- %s agent log (end)\n%s\n", n.name, harness.Tail(filepath.Join(n.dir, "agent.log"), 6000))
		}
	}
	js, _ := json.Marshal(struct {
		Seed uint64 `json:"seed"`
		Sync bool   `json:"sync"`
		TTL  float64
		Report
	}{cp.seed, cp.sync, cp.ttl, r})
	if *flagReport != "" {
		if err := os.WriteFile(*flagReport, js, 0o644); err != nil {
			t.Errorf("write %s: %v", *flagReport, err)
		}
	}
	fmt.Fprintf(&b, "chaos-json: %s\n", js)
	fmt.Fprintf(&b, "chaos: %d faults, %d violations, %d acknowledged rows lost, %d seed", r.Faults, len(r.Violations), r.Lost, cp.seed)
	t.Log(b.String())
}
