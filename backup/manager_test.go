package backup

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

// fakeEngine is pgBackRest as a state: a backup runs until released or
// cancelled, reporting progress once.
type fakeEngine struct {
	mu       sync.Mutex
	calls    []string
	release  chan struct{}
	started  chan struct{}
	repo     Repository
	failWith error
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{release: make(chan struct{}), started: make(chan struct{}, 10)}
}

func (f *fakeEngine) record(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (f *fakeEngine) called(c string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range f.calls {
		if x == c {
			return true
		}
	}
	return false
}

func (f *fakeEngine) Options() Options {
	return Options{Stanza: "main", Repository: "/repo", Dir: "/nonexistent"}
}
func (f *fakeEngine) StanzaCreate(ctx context.Context) error { f.record("stanza-create"); return nil }
func (f *fakeEngine) Check(ctx context.Context) error        { f.record("check"); return nil }
func (f *fakeEngine) PushMissing(ctx context.Context) ([]string, error) {
	f.record("push-missing")
	return nil, nil
}
func (f *fakeEngine) Backup(ctx context.Context, kind string, progress func(Progress)) (string, error) {
	f.record("backup " + kind)
	progress(Progress{Percent: 40, Bytes: 400})
	f.started <- struct{}{}
	select {
	case <-f.release:
		return "20260101-000000F", f.failWith
	case <-ctx.Done():
		return "", errors.New("terminated on signal [SIGTERM]")
	}
}
func (f *fakeEngine) ReadRepository(ctx context.Context, stanza string) (Repository, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.repo, nil
}

type fakeHooks struct {
	mu     sync.Mutex
	events []string
}

func (h *fakeHooks) Fire(event string, ok bool, details string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, event+": "+details)
}

func (h *fakeHooks) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

// memStore is one member's client of an in-memory cluster whose clock the
// test moves.
func memStore(t *testing.T, name string) (*dcs.MemoryCluster, *dcs.Memory, func(time.Duration)) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mc := dcs.NewMemoryCluster(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	s := mc.Client(name, 10*time.Second)
	if _, err := s.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	return mc, s, func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newManager(t *testing.T, e *fakeEngine, s Lock, h Hooks) *Manager {
	m := NewManager(ManagerConfig{Member: "node1", Engine: e, Lock: s, Hooks: h, ProgressEvery: 10 * time.Millisecond},
		testlog.New(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() { defer close(done); m.Run(ctx) }()
	return m
}

func TestBackupOnlyOnTheLeaderAndOneAtATime(t *testing.T) {
	_, s, _ := memStore(t, "node1")
	e, h := newFakeEngine(), &fakeHooks{}
	m := newManager(t, e, s, h)
	ctx := t.Context()
	if _, err := m.Start(ctx, "full"); !errors.Is(err, errNotLeading) {
		t.Fatalf("start on a replica = %v; want ErrNotLeading", err)
	}
	m.SetLeading(true)
	eventually(t, "stanza-create and check on taking over", func() bool { return e.called("stanza-create") && e.called("push-missing") && e.called("check") })
	if _, err := m.Start(ctx, "hourly"); !errors.Is(err, ErrBadKind) {
		t.Fatalf("start hourly = %v; want ErrBadKind", err)
	}
	if _, err := m.Start(ctx, "logical"); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("start logical without a dumper = %v; want ErrNotConfigured", err)
	}
	l, err := m.Start(ctx, "full")
	if err != nil {
		t.Fatal(err)
	}
	<-e.started
	if _, err := m.Start(ctx, "diff"); !errors.Is(err, ErrRunning) {
		t.Fatalf("second start = %v; want ErrRunning", err)
	}
	eventually(t, "progress in the lock", func() bool {
		c, _ := s.Cluster(ctx)
		return c.BackupLock != nil && c.BackupLock.ID == l.ID && c.BackupLock.Percent == 40 && c.BackupLock.Bytes == 400
	})
	if v, _ := m.View(ctx); v.Running == nil || v.Running.Percent != 40 {
		t.Fatalf("view while running: %+v", v.Running)
	}
	close(e.release)
	eventually(t, "run recorded", func() bool {
		c, _ := s.Cluster(ctx)
		return c.BackupLock == nil && c.BackupRuns["full"].OK && c.BackupRuns["full"].Label == "20260101-000000F"
	})
	eventually(t, "backup hook", func() bool {
		ev := h.list()
		return len(ev) == 1 && strings.HasPrefix(ev[0], "backup: full 20260101-000000F")
	})
}

func TestBackupStopsWhenLeadershipIsLost(t *testing.T) {
	_, s, _ := memStore(t, "node1")
	e, h := newFakeEngine(), &fakeHooks{}
	m := newManager(t, e, s, h)
	m.SetLeading(true)
	if _, err := m.Start(t.Context(), "full"); err != nil {
		t.Fatal(err)
	}
	<-e.started
	m.SetLeading(false)
	eventually(t, "the stopped run recorded as failed, the lock released", func() bool {
		c, _ := s.Cluster(t.Context())
		r := c.BackupRuns["full"]
		return c.BackupLock == nil && !r.OK && strings.Contains(r.Error, "no longer leads") && r.Label == ""
	})
	eventually(t, "backup_failed hook", func() bool { ev := h.list(); return len(ev) == 1 && strings.HasPrefix(ev[0], "backup_failed: ") })
}

func TestBackupStopsWhenTheLockExpires(t *testing.T) {
	mc, s, advance := memStore(t, "node1")
	e := newFakeEngine()
	m := newManager(t, e, s, nil)
	m.SetLeading(true)
	if _, err := m.Start(t.Context(), "incr"); err != nil {
		t.Fatal(err)
	}
	<-e.started
	// This agent's lease runs out (a long freeze, an etcd partition): the
	// lock goes with it and another leader may start a backup, so this
	// one must stop.
	advance(11 * time.Second)
	mc.Expire()
	eventually(t, "the run stopped for the lost lock", func() bool {
		c, _ := s.Cluster(t.Context())
		r := c.BackupRuns["incr"]
		return !r.OK && strings.Contains(r.Error, "backup lock was lost")
	})
}

func TestBackupRefusedWhileAnotherMemberRuns(t *testing.T) {
	mc, s, _ := memStore(t, "node1")
	other := mc.Client("node2", 10*time.Second)
	if _, err := other.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := other.AcquireBackupLock(t.Context(), dcs.BackupLock{Member: "node2", ID: "node2-1", Type: "full"}); err != nil {
		t.Fatal(err)
	}
	m := newManager(t, newFakeEngine(), s, nil)
	m.SetLeading(true)
	_, err := m.Start(t.Context(), "full")
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "on node2") {
		t.Fatalf("start while a former leader's run finishes = %v; want ErrRunning naming node2", err)
	}
}
