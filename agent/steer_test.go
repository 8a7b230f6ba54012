package agent

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/dcs"
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

func (p *recordingPooler) State() string { return "" }

// TestPoolerSteeredDuringLongAction: the old leader of a switchover rewinds
// right after handing the key over; its host's paused clients must be
// resumed on the new leader while the rewind still runs.
func TestPoolerSteeredDuringLongAction(t *testing.T) {
	ctx := t.Context()
	mc := dcs.NewMemoryCluster(time.Now)
	newLeader := mc.Client("b", 10*time.Second)
	if _, err := newLeader.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if won, err := newLeader.AcquireLeader(ctx); err != nil || !won {
		t.Fatalf("acquire: %v %v", won, err)
	}
	if err := newLeader.TouchMember(ctx, dcs.Member{Name: "b", ConnURL: "postgres://127.0.0.1:5433/postgres", Role: "primary", State: "running"}); err != nil {
		t.Fatal(err)
	}
	p := &recordingPooler{paused: true, resumed: make(chan struct{})}
	a := New(Settings{Node: Node{Name: "a"}, ConnectAddress: "127.0.0.1:5432"},
		Deps{DCS: mc.Client("a", 10*time.Second), Pooler: p}, hclog.NewNullLogger())
	// The state the handover leaves: clients paused, entries fenced.
	a.poolerPaused, a.pausedAt = true, time.Now()

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
	if p.leader != "127.0.0.1:5433" || a.poolerLeader != "127.0.0.1:5433" || a.poolerPaused {
		t.Fatalf("pooler leader %q (agent thinks %q), paused %v; want 127.0.0.1:5433, resumed", p.leader, a.poolerLeader, a.poolerPaused)
	}
}
