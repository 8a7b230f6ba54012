package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/internal/testlog"
)

// recordingPooler records what the agent asked of the local pooler.
type recordingPooler struct {
	mu      sync.Mutex
	leader  string
	paused  bool
	resumed chan struct{}
}

func (p *recordingPooler) SetLeader(ctx context.Context, addr string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.leader = addr
	return nil
}

func (p *recordingPooler) Pause(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	return nil
}

func (p *recordingPooler) Resume(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		p.paused = false
		close(p.resumed)
	}
	return nil
}

func (p *recordingPooler) Fence(ctx context.Context) error { return p.SetLeader(ctx, "") }

func (p *recordingPooler) State() string { return "" }

// TestPoolerSteeredDuringLongAction: the old leader of a switchover rewinds
// right after handing the key over; its host's paused clients must be
// resumed on the new leader while the rewind still runs.
func TestPoolerSteeredDuringLongAction(t *testing.T) {
	ctx := t.Context()
	mc := clusterLedBy(t, "b")
	p := &recordingPooler{paused: true, resumed: make(chan struct{})}
	a := New(Settings{Node: Node{Name: "a"}, ConnectAddress: "127.0.0.1:5432"},
		Deps{DCS: mc.Client("a", 10*time.Second), Pooler: p}, testlog.New(t))
	// The state the handover leaves: clients paused, entries fenced.
	a.steer.paused, a.steer.pausedAt = true, time.Now()

	rewind := func() error {
		select {
		case <-p.resumed:
			return nil
		case <-time.After(5 * time.Second):
			return errors.New("clients still paused 5 s into the rewind")
		}
	}
	if err := a.steerWhile(ctx, Decision{Action: ActRewind, Target: "b"}, rewind); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.leader != "127.0.0.1:5433" || a.steer.leader != "127.0.0.1:5433" || a.steer.paused {
		t.Fatalf("pooler leader %q (agent thinks %q), paused %v; want 127.0.0.1:5433, resumed", p.leader, a.steer.leader, a.steer.paused)
	}
}

// clusterLedBy is an in-memory cluster whose leader runs as primary on
// 127.0.0.1:5433.
func clusterLedBy(t *testing.T, name string) *dcs.MemoryCluster {
	t.Helper()
	ctx := t.Context()
	mc := dcs.NewMemoryCluster(time.Now)
	l := mc.Client(name, 10*time.Second)
	if _, err := l.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if won, err := l.AcquireLeader(ctx); err != nil || !won {
		t.Fatalf("acquire: %v %v", won, err)
	}
	if err := l.TouchMember(ctx, dcs.Member{Name: name, ConnURL: "postgres://127.0.0.1:5433/postgres", Role: "primary", State: "running"}); err != nil {
		t.Fatal(err)
	}
	return mc
}

// rewindPG is the PostgreSQL of a former primary; only what a rewind
// calls is implemented.
type rewindPG struct {
	Postgres
	rewind func() error
}

func (p *rewindPG) Stop(ctx context.Context, mode StopMode) error { return nil }
func (p *rewindPG) Fence(ctx context.Context) error               { return nil }
func (p *rewindPG) Start(ctx context.Context, up *Upstream) error { return nil }
func (p *rewindPG) Rewind(ctx context.Context, up Upstream) error { return p.rewind() }
func (p *rewindPG) State(ctx context.Context) (PGState, error)    { return PGState{}, nil }

// TestRestartedFormerPrimaryAnnouncesItselfBeforeRewinding: an agent
// restarted after its member key expired must be known to the leader (which
// creates replication slots for members) before it starts PostgreSQL with
// a slot, or the standby can never stream and the start never ends.
func TestRestartedFormerPrimaryAnnouncesItselfBeforeRewinding(t *testing.T) {
	ctx := t.Context()
	mc := clusterLedBy(t, "b")
	store := mc.Client("a", 10*time.Second)
	if _, err := store.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	var called bool
	var probe error
	pg := &rewindPG{rewind: func() error {
		called = true
		c, err := store.Cluster(ctx)
		if err == nil && c.Member("a") == nil {
			err = errors.New("rewinding while the leader does not know this member")
		}
		probe = err
		return err
	}}
	a := New(Settings{Node: Node{Name: "a", UsePgRewind: true, UseSlots: true}, ConnectAddress: "127.0.0.1:5432"},
		Deps{DCS: store, Postgres: pg}, testlog.New(t))
	c, err := store.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o := Observation{Cluster: c, PG: PGState{State: "stopped", WasPrimary: true}}
	if d := decideFollower(o, "b"); d.Action != ActRewind {
		t.Fatalf("decision %v (%s); want rewind", d.Action, d.Reason)
	}
	a.execute(ctx, o, Decision{Action: ActRewind, Target: "b"})
	if !called || probe != nil {
		t.Fatalf("rewind called %v: %v", called, probe)
	}
}

// wipeWatchPG records a Wipe.
type wipeWatchPG struct {
	rewindPG
	wiped bool
}

func (p *wipeWatchPG) Wipe(ctx context.Context) error { p.wiped = true; return nil }
func (p *wipeWatchPG) Clone(ctx context.Context, up Upstream) error {
	return errors.New("clone: source unreachable")
}

// TestRewindAgainstAnUnreachableSourceKeepsTheData: a former primary told
// to follow a leader whose record is stale (it died, its key not yet
// expired) cannot reach it. The rewind fails for that reason, not because
// the data cannot be rewound: the data directory stays. (Before: any rewind
// failure wiped it for a re-clone, which then failed too: the only copy of
// that node's data gone.) Only a rewind that is impossible wipes, and only
// once the source answers as a primary.
func TestRewindAgainstAnUnreachableSourceKeepsTheData(t *testing.T) {
	ctx := t.Context()
	mc := clusterLedBy(t, "b")
	store := mc.Client("a", 10*time.Second)
	if _, err := store.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := store.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		rewindErr error
		probe     ProbeResult
		wipe      bool
	}{
		{"source unreachable", errors.New("rewind: source unreachable: connection refused"), ProbeNoAnswer, false},
		{"rewind impossible, source down", fmt.Errorf("%w: no common ancestor", ErrCannotRewind), ProbeNoAnswer, false},
		{"rewind impossible, source a running primary", fmt.Errorf("%w: no common ancestor", ErrCannotRewind), ProbePrimary, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pg := &wipeWatchPG{rewindPG: rewindPG{rewind: func() error { return tc.rewindErr }}}
			a := New(Settings{Node: Node{Name: "a", UsePgRewind: true}, ConnectAddress: "127.0.0.1:5432"},
				Deps{DCS: store, Postgres: pg, Probe: fixedProbe(tc.probe)}, testlog.New(t))
			a.execute(ctx, Observation{Cluster: c, PG: PGState{State: "stopped", WasPrimary: true}}, Decision{Action: ActRewind, Target: "b"})
			if pg.wiped != tc.wipe {
				t.Fatalf("wiped %v, want %v", pg.wiped, tc.wipe)
			}
		})
	}
}

type fixedProbe ProbeResult

func (f fixedProbe) Probe(ctx context.Context, hostPort string) ProbeResult { return ProbeResult(f) }

// TestOperatorRequestsDoNotWaitForABusyLoop: while this node's loop holds
// its lock through a long action (a clone of a big database), a
// switchover asked of it is checked and recorded at once (it needs
// nothing of the loop), and a reinitialize, which would need the loop,
// is refused at once with the reason instead of hanging.
func TestOperatorRequestsDoNotWaitForABusyLoop(t *testing.T) {
	ctx := t.Context()
	mc := clusterLedBy(t, "b")
	rc := mc.Client("c", 10*time.Second)
	if _, err := rc.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rc.TouchMember(ctx, dcs.Member{Name: "c", ConnURL: "postgres://127.0.0.1:5434/postgres", Role: "replica",
		State: "running", Streaming: true, Priority: 100}); err != nil {
		t.Fatal(err)
	}
	store := mc.Client("a", 10*time.Second)
	a := New(Settings{Node: Node{Name: "a"}, ConnectAddress: "127.0.0.1:5432"}, Deps{DCS: store}, testlog.New(t))
	// The loop, busy cloning: it holds its lock for the whole action.
	a.mu.Lock()
	release, cloning := make(chan struct{}), make(chan struct{})
	cloned := make(chan error, 1)
	go func() {
		cloned <- a.steerWhile(ctx, Decision{Action: ActClone, Target: "b"}, func() error {
			close(cloning)
			<-release
			return nil
		})
	}()
	defer func() {
		close(release)
		<-cloned
		a.mu.Unlock()
	}()
	<-cloning

	start := time.Now()
	if err := a.Reinitialize(ctx); !errors.Is(err, ErrNotCompleted) || time.Since(start) > time.Second {
		t.Fatalf("reinitialize on a busy node: %v after %s; want ErrNotCompleted at once", err, time.Since(start))
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := a.Switchover(sctx, SwitchoverRequest{Candidate: "c"})
		done <- err
	}()
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := store.Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c.Failover != nil && c.Failover.Candidate == "c" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the switchover was not recorded within 2 s while the loop was busy")
		}
		select {
		case err := <-done:
			t.Fatalf("switchover returned before recording the request: %v", err)
		case <-time.After(10 * time.Millisecond): // polled to the deadline above
		}
	}
	// No leader acts on it here: the request then times out, it does not hang.
	if err := <-done; !errors.Is(err, ErrNotCompleted) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("switchover: %v", err)
	}
}

// TestBoundedNamesItsSetting: a long action cut by its configured deadline
// fails naming the setting to raise; one cut by the agent's own shutdown,
// or failing on its own, is not blamed on the bound.
func TestBoundedNamesItsSetting(t *testing.T) {
	hang := func(ctx context.Context) error { <-ctx.Done(); return fmt.Errorf("pg_basebackup: %w", ctx.Err()) }
	boom := errors.New("pg_basebackup: connection refused")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name     string
		ctx      context.Context
		limit    time.Duration
		act      func(context.Context) error
		wantKey  bool
		wantBoom bool
	}{
		{"deadline cuts a hang", context.Background(), 30 * time.Millisecond, hang, true, false},
		{"own failure passes through", context.Background(), time.Minute, func(context.Context) error { return boom }, false, true},
		{"shutdown is not the bound", cancelled, time.Minute, hang, false, false},
		{"success", context.Background(), time.Minute, func(context.Context) error { return nil }, false, false},
	}
	for _, c := range cases {
		start := time.Now()
		err := bounded(c.ctx, c.limit, "postgres.clone_timeout", c.act)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s: took %s", c.name, took)
		}
		if got := err != nil && strings.Contains(err.Error(), "postgres.clone_timeout"); got != c.wantKey {
			t.Errorf("%s: error %v; naming the setting: %v, want %v", c.name, err, got, c.wantKey)
		}
		if c.wantBoom != errors.Is(err, boom) {
			t.Errorf("%s: error %v, want the action's own error: %v", c.name, err, c.wantBoom)
		}
	}
	// No bound configured: the action runs under the caller's context.
	if err := bounded(context.Background(), 0, "k", func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); ok {
			return errors.New("a deadline was set")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}
