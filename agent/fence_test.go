package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/internal/testlog"
)

// callLog records the order of side effects across fakes.
type callLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *callLog) add(c string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, c)
}

func (l *callLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.calls...)
}

// hangingPooler is a PgBouncer that does not answer (frozen, or its admin
// console unreachable): every call waits for its context.
type hangingPooler struct {
	log      *callLog
	deadline time.Duration // of the context Fence got
}

func (p *hangingPooler) wait(ctx context.Context, what string) error {
	p.log.add("pooler " + what)
	<-ctx.Done()
	return ctx.Err()
}
func (p *hangingPooler) SetLeader(ctx context.Context, addr string) error {
	return p.wait(ctx, "set leader")
}
func (p *hangingPooler) Pause(ctx context.Context) error  { return p.wait(ctx, "pause") }
func (p *hangingPooler) Resume(ctx context.Context) error { return p.wait(ctx, "resume") }
func (p *hangingPooler) Fence(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok {
		p.deadline = time.Until(dl)
	}
	return p.wait(ctx, "fence")
}
func (p *hangingPooler) State() string { return "" }

// loggingPG records the fence.
type loggingPG struct {
	Postgres
	log *callLog
}

func (p *loggingPG) Fence(ctx context.Context) error {
	p.log.add("postgres fence")
	return nil
}
func (p *loggingPG) Stop(ctx context.Context, mode StopMode) error {
	p.log.add("postgres stop " + string(mode))
	return nil
}
func (p *loggingPG) State(ctx context.Context) (PGState, error) {
	return PGState{State: "stopped"}, nil
}

// TestFenceDoesNotWaitOnPgBouncer: a fence stops PostgreSQL first, without
// waiting on anything else; PgBouncer is told afterwards, with a bound,
// and told to drop the old primary's connections (Fence: KILL), not only
// to point elsewhere. (Before: the fence repointed PgBouncer first, up to
// 3 s to connect and then no limit, before it stopped PostgreSQL, and never
// sent KILL, so session-pooled clients stayed on the old primary.)
func TestFenceDoesNotWaitOnPgBouncer(t *testing.T) {
	for _, act := range []Action{ActFence, ActDemote} {
		t.Run(act.String(), func(t *testing.T) {
			log := &callLog{}
			pool := &hangingPooler{log: log}
			mc := clusterLedBy(t, "b")
			a := New(Settings{Node: Node{Name: "a"}, ConnectAddress: "127.0.0.1:5432"},
				Deps{DCS: mc.Client("a", 10*time.Second), Postgres: &loggingPG{log: log}, Pooler: pool}, testlog.New(t))
			a.steer.leader = "127.0.0.1:5432" // PgBouncer points its writes here
			c, err := mc.Client("a", time.Second).Cluster(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			a.execute(t.Context(), Observation{Cluster: c, PG: PGState{Running: true, Answering: true}}, Decision{Action: act, Reason: "test"})
			took := time.Since(start)
			calls := log.list()
			if len(calls) == 0 || (calls[0] != "postgres fence" && calls[0] != "postgres stop fast") {
				t.Fatalf("first call %v; want PostgreSQL stopped first", calls)
			}
			found := false
			for _, c := range calls {
				if c == "pooler fence" {
					found = true
				}
			}
			if !found {
				t.Fatalf("calls %v: PgBouncer not told to drop the old primary's connections", calls)
			}
			if pool.deadline <= 0 || pool.deadline > poolerBound {
				t.Fatalf("PgBouncer fence deadline %s; want within %s", pool.deadline, poolerBound)
			}
			// The hanging PgBouncer costs the bound at most, and the rest of
			// the step (repointing with no leader known) gives up at once.
			if took > 2*poolerBound+time.Second {
				t.Fatalf("%s took %s against a hanging PgBouncer", act, took)
			}
		})
	}
}

// TestLostRaceIsNotPublished: two replicas race for a free leader key; the
// one that loses publishes no leadership. (Before: acquire returned nil on
// a lost race and publish derived IsLeader from the action attempted, so
// the loser answered /primary for a loop.)
func TestLostRaceIsNotPublished(t *testing.T) {
	ctx := t.Context()
	mc := dcs.NewMemoryCluster(time.Now)
	winner, loser := mc.Client("w", 10*time.Second), mc.Client("l", 10*time.Second)
	for _, s := range []*dcs.Memory{winner, loser} {
		if _, err := s.Renew(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c, err := loser.Cluster(ctx) // read while the key is free
	if err != nil {
		t.Fatal(err)
	}
	if won, err := winner.AcquireLeader(ctx); err != nil || !won {
		t.Fatalf("winner: %v %v", won, err)
	}
	a := New(Settings{Node: Node{Name: "l"}, ConnectAddress: "127.0.0.1:5433"},
		Deps{DCS: loser, Postgres: &loggingPG{log: &callLog{}}}, testlog.New(t))
	o := Observation{Cluster: c, PG: PGState{Running: true, Answering: true, InRecovery: true, State: "running"}, Now: time.Now()}
	d := Decision{Action: ActAcquire, Reason: "no leader; best candidate"}
	out := a.execute(ctx, o, d)
	if out.KeyHeld {
		t.Fatal("outcome says the key is held after a lost race")
	}
	a.publish(ctx, o, d, out, time.Now())
	if st := a.Status(); st.IsLeader {
		t.Fatal("the loser of the race publishes itself as leader")
	}
}

// TestFailoverRequestRefusesNoFailoverMembers: POST /failover naming a
// member with priority 0 or nofailover is refused (412), forced or not,
// with a leader or without. (Before: with no leader any candidate was
// accepted; --force skipped the check with one.)
func TestFailoverRequestRefusesNoFailoverMembers(t *testing.T) {
	ctx := t.Context()
	for _, withLeader := range []bool{true, false} {
		for _, m := range []dcs.Member{
			{Name: "zero", Role: "replica", State: "running", Streaming: true, Priority: 0},
			{Name: "nofail", Role: "replica", State: "running", Streaming: true, Priority: 100, NoFailover: true},
			{Name: "tagged", Role: "replica", State: "running", Streaming: true, Priority: 100, Tags: map[string]string{"nofailover": "true"}},
		} {
			mc := dcs.NewMemoryCluster(time.Now)
			if withLeader {
				mc = clusterLedBy(t, "l")
			}
			s := mc.Client(m.Name, 10*time.Second)
			if _, err := s.Renew(ctx); err != nil {
				t.Fatal(err)
			}
			if err := s.TouchMember(ctx, m); err != nil {
				t.Fatal(err)
			}
			a := New(Settings{Node: Node{Name: "x"}}, Deps{DCS: mc.Client("x", 10*time.Second)}, testlog.New(t))
			err := a.Failover(ctx, FailoverRequest{Candidate: m.Name, Force: true})
			if !errors.Is(err, ErrPrecondition) || !strings.Contains(err.Error(), "never promoted") {
				t.Fatalf("leader %v, forced failover to %s: %v; want a precondition failure", withLeader, m.Name, err)
			}
			if c, _ := mc.Client("o", time.Second).Cluster(ctx); c.Failover != nil {
				t.Fatalf("the refused request was recorded: %+v", c.Failover)
			}
		}
	}
}
