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

// fakeDrill is a drill on one host as a state: it passes, or fails with err.
type fakeDrill struct {
	mu   sync.Mutex
	runs int
	err  error
}

func (f *fakeDrill) Drill(ctx context.Context) (DrillResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.runs++
	return DrillResult{Backup: "20260101-000000F", Scratch: "/here/pgwarden-drill-1"}, f.err
}

func (f *fakeDrill) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs
}

// fakeRemote is the other members' agents: each runs its drill under the
// lock the leader holds, or cannot be reached.
type fakeRemote struct {
	s      *dcs.Memory
	mu     sync.Mutex
	asked  []string
	down   map[string]bool
	drills map[string]*fakeDrill
}

func (f *fakeRemote) RemoteDrill(ctx context.Context, peer dcs.Member, lockID string) (DrillResult, bool, error) {
	f.mu.Lock()
	f.asked = append(f.asked, peer.Name)
	down, d := f.down[peer.Name], f.drills[peer.Name]
	f.mu.Unlock()
	if down {
		return DrillResult{}, false, errors.New("connection refused")
	}
	// What the peer's DrillHere checks: the lock is held for this drill.
	c, err := f.s.Cluster(ctx)
	if err != nil || c.BackupLock == nil || c.BackupLock.ID != lockID || c.BackupLock.Type != "drill" {
		return DrillResult{}, false, ErrNotLocked
	}
	res, err := d.Drill(ctx)
	res.Scratch = "/" + peer.Name + "/pgwarden-drill-1"
	return res, true, err
}

func (f *fakeRemote) askedOf() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

func drillManager(t *testing.T, s *dcs.Memory, local Drills, remote RemoteDriller, h Hooks) *Manager {
	m := NewManager(ManagerConfig{Member: "node1", Engine: newFakeEngine(), Lock: s, Hooks: h, ProgressEvery: 10 * time.Millisecond,
		Driller: local, Remote: remote}, testlog.New(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() { defer close(done); m.Run(ctx) }()
	m.SetLeading(true)
	return m
}

// joinAs adds a member record as another member's agent writes it.
func joinAs(t *testing.T, mc *dcs.MemoryCluster, m dcs.Member) {
	t.Helper()
	c := mc.Client(m.Name, 10*time.Second)
	if _, err := c.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.TouchMember(t.Context(), m); err != nil {
		t.Fatal(err)
	}
}

func runDrill(t *testing.T, m *Manager, s *dcs.Memory) dcs.BackupRun {
	t.Helper()
	if err := m.RunJob(t.Context(), "drill", time.Time{}); err != nil && !strings.Contains(err.Error(), "ran on") {
		t.Fatalf("drill: %v", err)
	}
	c, err := s.Cluster(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if c.BackupLock != nil {
		t.Fatalf("the lock outlived the drill: %+v", c.BackupLock)
	}
	return c.BackupRuns["drill"]
}

// The leader's drill runs on a healthy streaming replica's host, the
// least behind first, under the leader's lock; an unreachable one is
// skipped; with none left it runs on the leader's own host. A drill that
// ran on a replica and failed is the outcome: it is not run again here.
func TestDrillRunsOnAReplicaHost(t *testing.T) {
	mc, s, _ := memStore(t, "node1")
	joinAs(t, mc, dcs.Member{Name: "node1", Role: "primary", State: "running", APIURL: "http://node1"})
	joinAs(t, mc, dcs.Member{Name: "node2", Role: "replica", State: "running", Streaming: true, ReplayedLSN: 10, APIURL: "http://node2"})
	joinAs(t, mc, dcs.Member{Name: "node3", Role: "replica", State: "running", Streaming: true, ReplayedLSN: 20, APIURL: "http://node3"})
	joinAs(t, mc, dcs.Member{Name: "node4", Role: "replica", State: "running", Streaming: false, ReplayedLSN: 30, APIURL: "http://node4"})
	joinAs(t, mc, dcs.Member{Name: "node5", Role: "replica", State: "stopped", Streaming: true, ReplayedLSN: 30, APIURL: "http://node5"})
	local := &fakeDrill{}
	remote := &fakeRemote{s: s, down: map[string]bool{}, drills: map[string]*fakeDrill{"node2": {}, "node3": {}}}
	h := &fakeHooks{}
	m := drillManager(t, s, local, remote, h)

	r := runDrill(t, m, s)
	if !r.OK || r.Member != "node3" || !strings.Contains(r.Details, "on node3 in /node3/pgwarden-drill-1") {
		t.Fatalf("drill with two healthy replicas: %+v; want it run on node3 (least behind)", r)
	}
	if a := remote.askedOf(); strings.Join(a, ",") != "node3" || local.count() != 0 {
		t.Fatalf("asked %v, local drills %d; want node3 only", a, local.count())
	}
	eventually(t, "drill hook naming the host", func() bool {
		ev := h.list()
		return len(ev) == 1 && strings.Contains(ev[0], "on node3 passed")
	})

	remote.mu.Lock()
	remote.down["node3"] = true
	remote.drills["node2"].err = errors.New("drill: restore backup 20260101-000000F: checksum mismatch")
	remote.mu.Unlock()
	r = runDrill(t, m, s)
	if r.OK || r.Member != "node2" || !strings.Contains(r.Error, "checksum mismatch (ran on node2)") || local.count() != 0 {
		t.Fatalf("drill failing on node2 after node3 is unreachable: %+v, local drills %d", r, local.count())
	}

	remote.mu.Lock()
	remote.down["node2"] = true
	remote.mu.Unlock()
	r = runDrill(t, m, s)
	if !r.OK || r.Member != "node1" || !strings.Contains(r.Details, "on node1 in /here/") || local.count() != 1 {
		t.Fatalf("drill with no replica reachable: %+v, local drills %d; want it on the leader node1", r, local.count())
	}
}

// A member runs a drill for the leader only under the backup lock held
// for that drill, and one at a time.
func TestDrillHereNeedsTheLock(t *testing.T) {
	mc, s, _ := memStore(t, "node2")
	local := &fakeDrill{}
	m := NewManager(ManagerConfig{Member: "node2", Engine: newFakeEngine(), Lock: s, Driller: local}, testlog.New(t))
	if _, err := m.DrillHere(t.Context(), ""); !errors.Is(err, ErrNotLocked) {
		t.Fatalf("no id = %v; want ErrNotLocked", err)
	}
	if _, err := m.DrillHere(t.Context(), "node1-1"); !errors.Is(err, ErrNotLocked) || !strings.Contains(err.Error(), "holds nothing") {
		t.Fatalf("no lock held = %v; want ErrNotLocked", err)
	}
	leader := mc.Client("node1", 10*time.Second)
	if _, err := leader.Renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.AcquireBackupLock(t.Context(), dcs.BackupLock{Member: "node1", ID: "node1-1", Type: "full"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.DrillHere(t.Context(), "node1-1"); !errors.Is(err, ErrNotLocked) || !strings.Contains(err.Error(), "full node1-1 of node1") {
		t.Fatalf("the lock held for a full backup = %v; want ErrNotLocked", err)
	}
	c, _ := s.Cluster(t.Context())
	if err := leader.ReleaseBackupLock(t.Context(), c.BackupLock.Revision); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.AcquireBackupLock(t.Context(), dcs.BackupLock{Member: "node1", ID: "node1-2", Type: "drill"}); err != nil {
		t.Fatal(err)
	}
	res, err := m.DrillHere(t.Context(), "node1-2")
	if err != nil || res.Member != "node2" || local.count() != 1 {
		t.Fatalf("drill under the lock = %+v, %v", res, err)
	}
	// This member's watch has not delivered the lock yet: etcd has it.
	stale := NewManager(ManagerConfig{Member: "node2", Engine: newFakeEngine(), Lock: staleView{s}, Driller: local}, testlog.New(t))
	if _, err := stale.DrillHere(t.Context(), "node1-2"); err != nil {
		t.Fatalf("drill under the lock, through a watch that lags = %v", err)
	}
	m.drilling.Store(true)
	if _, err := m.DrillHere(t.Context(), "node1-2"); !errors.Is(err, ErrDrilling) {
		t.Fatalf("second drill at once = %v; want ErrDrilling", err)
	}
	m.drilling.Store(false)
	local.err = errors.New("drill: table t cannot be read")
	var failed DrillFailed
	if _, err := m.DrillHere(t.Context(), "node1-2"); !errors.As(err, &failed) {
		t.Fatalf("failing drill = %v; want DrillFailed", err)
	}
}

// staleView is a store whose watch has not delivered the backup lock
// yet; ClusterFresh reads the store itself.
type staleView struct{ *dcs.Memory }

func (s staleView) Cluster(ctx context.Context) (*dcs.Cluster, error) {
	c, err := s.Memory.Cluster(ctx)
	if err == nil {
		c.BackupLock = nil
	}
	return c, err
}

func (s staleView) ClusterFresh(ctx context.Context) (*dcs.Cluster, error) {
	return s.Memory.Cluster(ctx)
}
