//go:build integration

package integration

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/integration/harness"
	"github.com/pgwarden/pgwarden/postgres/pgproc"
)

// TestBootstrapFailoverRejoin: three agents bootstrap one primary and two
// streaming replicas; kill -9 of the leader's agent and postmaster promotes
// the caught-up replica with the higher priority, the other replica follows
// it, no committed row is lost, and the old node rejoins as a replica.
func TestBootstrapFailoverRejoin(t *testing.T) {
	// node1 bootstraps first in practice but any node may win the race; the
	// replicas differ in priority so the choice among equals is visible.
	c := newCluster(t, clusterOpts{ttl: 5, retry: 2, priorities: []int{100, 50, 150}})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	t.Logf("bootstrapped: primary %s", p.name)

	must(t, p.exec("CREATE TABLE t (id int primary key)"))
	for i := range 100 {
		must(t, p.exec("INSERT INTO t VALUES ($1)", i))
	}
	var replicas []*node
	for _, n := range c.nodes {
		if n != p {
			replicas = append(replicas, n)
		}
	}
	waitRows(t, 10*time.Second, 100, replicas...)
	// Caught up: equal WAL positions, so priority decides.
	want := replicas[0]
	if prio(c, replicas[1]) > prio(c, want) {
		want = replicas[1]
	}
	// Let both replicas publish the same position before the kill.
	harness.WaitFor(t, 10*time.Second, "replicas at the same replayed position", func() (bool, error) {
		a, b := lsnOf(replicas[0]), lsnOf(replicas[1])
		return a != 0 && a == b, fmt.Errorf("positions %d and %d", a, b)
	})

	killed := time.Now()
	p.killHard()
	np := c.primary(time.Duration(c.opts.ttl*float64(time.Second))+30*time.Second, p)
	t.Logf("new primary %s after %.1fs", np.name, time.Since(killed).Seconds())
	if np != want {
		t.Fatalf("promoted %s, want %s (equal WAL, higher priority)", np.name, want.name)
	}
	if n, err := np.queryInt("SELECT count(*) FROM t"); err != nil || n != 100 {
		t.Fatalf("new primary has %d rows (%v), want all 100 committed rows", n, err)
	}
	must(t, np.exec("INSERT INTO t VALUES (1000)"))
	other := replicas[0]
	if other == np {
		other = replicas[1]
	}
	waitRows(t, 30*time.Second, 101, other)

	// The old primary comes back and rejoins as a replica of the new one.
	p.start()
	harness.WaitFor(t, 90*time.Second, "old primary rejoins as streaming replica", func() (bool, error) {
		code := p.probe("/replica")
		return code == 200, fmt.Errorf("/replica = %d", code)
	})
	must(t, np.exec("INSERT INTO t VALUES (1001)"))
	waitRows(t, 20*time.Second, 102, p)
	if code := p.probe("/primary"); code != 503 {
		t.Fatalf("rejoined node answers /primary %d", code)
	}
}

// TestFailoverPicksFurthestWAL: the replica that received more WAL wins
// even against a higher priority.
func TestFailoverPicksFurthestWAL(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 5, retry: 2, priorities: []int{100, 100, 100}})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	_, ahead := oneReplicaBehind(t, c, p, 50)
	// Raise the lagging one's priority: WAL position must still win.
	p.killHard()
	np := c.primary(60*time.Second, p)
	if np != ahead {
		t.Fatalf("promoted %s, want %s, the replica with the furthest WAL", np.name, ahead.name)
	}
	if n, _ := np.queryInt("SELECT count(*) FROM t"); n != 50 {
		t.Fatalf("new primary has %d rows, want 50", n)
	}
}

// oneReplicaBehind creates table t on the primary p, freezes the WAL
// receiver of one replica (thawed at cleanup) and commits rows that only
// the other receives: it returns the replica behind and the one ahead.
func oneReplicaBehind(t *testing.T, c *cluster, p *node, rows int) (behind, ahead *node) {
	t.Helper()
	must(t, p.exec("CREATE TABLE t (id int primary key)"))
	var replicas []*node
	for _, n := range c.nodes {
		if n != p {
			replicas = append(replicas, n)
		}
	}
	waitRows(t, 10*time.Second, 0, replicas...)
	behind, ahead = replicas[0], replicas[1]
	wr, err := behind.queryInt("SELECT pid FROM pg_stat_wal_receiver")
	if err != nil || wr == 0 {
		t.Fatalf("walreceiver pid of %s: %d %v", behind.name, wr, err)
	}
	must(t, syscall.Kill(int(wr), syscall.SIGSTOP))
	t.Cleanup(func() { _ = syscall.Kill(int(wr), syscall.SIGCONT) })
	for i := range rows {
		must(t, p.exec("INSERT INTO t VALUES ($1)", i))
	}
	waitRows(t, 10*time.Second, int64(rows), ahead)
	return behind, ahead
}

// TestFrozenLeaderStopsWritesFirst: the leader's agent is frozen with
// SIGSTOP for longer than the ttl. Its PostgreSQL must stop accepting
// writes before any other node is promoted (the watchdog fences it).
func TestFrozenLeaderStopsWritesFirst(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 5, retry: 2})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	must(t, p.exec("CREATE TABLE t (id bigserial primary key, at timestamptz default clock_timestamp())"))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var lastOldWrite time.Time
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		// A writer aimed straight at the old primary's port.
		for ctx.Err() == nil {
			if err := p.exec("INSERT INTO t DEFAULT VALUES"); err == nil {
				mu.Lock()
				lastOldWrite = time.Now()
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	harness.WaitFor(t, 5*time.Second, "writes on the old primary", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return !lastOldWrite.IsZero(), nil
	})
	// For each replica, the last moment it was provably still a standby:
	// the send time of a pg_is_in_recovery() that answered true. Its
	// promotion happened after that.
	type watch struct {
		n            *node
		lastStandby  time.Time
		sawPromotion bool
	}
	var watches []*watch
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if n == p {
			continue
		}
		w := &watch{n: n}
		watches = append(watches, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := n.connect(ctx)
			if err != nil {
				t.Errorf("connect %s: %v", n.name, err)
				return
			}
			defer conn.Close(context.Background())
			for ctx.Err() == nil {
				sent := time.Now()
				var rec bool
				if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
					return
				}
				mu.Lock()
				if rec {
					w.lastStandby = sent
				} else {
					w.sawPromotion = true
				}
				mu.Unlock()
				if !rec {
					return
				}
				time.Sleep(5 * time.Millisecond) // sampling interval
			}
		}()
	}

	must(t, p.agent.Pause())
	frozen := time.Now()
	defer p.agent.Resume()

	var np *node
	harness.WaitFor(t, 60*time.Second, "another node promoted", func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, w := range watches {
			if w.sawPromotion {
				np = w.n
				return true, nil
			}
		}
		return false, nil
	})
	cancel()
	<-writerDone
	wg.Wait()
	mu.Lock()
	last := lastOldWrite
	var standbyUntil time.Time
	for _, w := range watches {
		if w.n == np {
			standbyUntil = w.lastStandby
		}
	}
	mu.Unlock()
	t.Logf("agent frozen at 0s; last acknowledged write on the old primary at %.2fs; %s still a standby at %.2fs, then promoted",
		last.Sub(frozen).Seconds(), np.name, standbyUntil.Sub(frozen).Seconds())
	if !last.Before(standbyUntil) {
		t.Fatalf("old primary acknowledged a write at %.3fs, not before %s's promotion (standby until %.3fs)",
			last.Sub(frozen).Seconds(), np.name, standbyUntil.Sub(frozen).Seconds())
	}
	ttl := time.Duration(c.opts.ttl * float64(time.Second))
	if last.Sub(frozen) > ttl {
		t.Fatalf("old primary kept accepting writes %.2fs after its agent froze (ttl %s)", last.Sub(frozen).Seconds(), ttl)
	}
	// The frozen agent, thawed, must rejoin as a replica.
	must(t, p.agent.Resume())
	harness.WaitFor(t, 90*time.Second, "thawed node rejoins as replica", func() (bool, error) {
		code := p.probe("/replica")
		return code == 200, fmt.Errorf("/replica = %d", code)
	})
}

// TestPausePreventsFailover: with pause on, losing the leader promotes no
// one; resuming lets the failover happen.
func TestPausePreventsFailover(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 5, retry: 2})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	pauseCluster(t, c, p)
	p.killHard()
	// Well past the lease: nobody may have been promoted.
	deadline := time.Now().Add(time.Duration(c.opts.ttl*float64(time.Second)) + 5*time.Second)
	for time.Now().Before(deadline) {
		for _, n := range c.nodes {
			if n != p && n.probe("/primary") == 200 {
				t.Fatalf("%s was promoted while the cluster was paused", n.name)
			}
		}
		time.Sleep(200 * time.Millisecond) // polling interval of a bounded check, not synchronization
	}
	other := c.nodes[0]
	if other == p {
		other = c.nodes[1]
	}
	pgwarden(t, "resume", "-c", other.cfgPath)
	np := c.primary(60*time.Second, p)
	t.Logf("after resume, %s promoted", np.name)
}

func prio(c *cluster, n *node) int {
	for i, x := range c.nodes {
		if x == n && i < len(c.opts.priorities) {
			return c.opts.priorities[i]
		}
	}
	return 100
}

// lsnOf is a node's replayed WAL position as its REST API reports it.
func lsnOf(n *node) uint64 {
	st := n.status()
	if st == nil {
		return 0
	}
	if x, ok := st["xlog"].(map[string]any); ok {
		for _, k := range []string{"replayed_location", "received_location", "location"} {
			if v, ok := x[k].(float64); ok {
				return uint64(v)
			}
		}
	}
	return 0
}

// TestPausedLeaderComesBackAfterEtcd: in pause, etcd freezes for 2 x ttl.
// The leader cannot renew and fences itself (pause stops failover, not
// the lease); once etcd is back it takes its key back and restarts, as no
// one else can have been promoted. (Before: every member said "paused: no
// automatic failover" and the cluster had no primary until an operator
// acted.)
func TestPausedLeaderComesBackAfterEtcd(t *testing.T) {
	const ttl = 5
	c := newCluster(t, clusterOpts{ttl: ttl, retry: 2})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	pauseCluster(t, c, p)
	pm := p.postmasterPID()
	frozen := time.Now()
	must(t, c.etcd.Pause())
	harness.WaitFor(t, 3*ttl*time.Second, "the paused leader fences itself", func() (bool, error) {
		return !pgproc.Alive(pm), fmt.Errorf("postmaster %d alive", pm)
	})
	t.Logf("paused leader fenced %.1fs after etcd froze", time.Since(frozen).Seconds())
	harness.WaitFor(t, 2*ttl*time.Second, "2 x ttl with etcd frozen", func() (bool, error) {
		return time.Since(frozen) > 2*ttl*time.Second, nil
	})
	must(t, c.etcd.Resume())
	thawed := time.Now()
	if np := c.primary(30 * time.Second); np != p {
		t.Fatalf("%s primary after etcd came back, want the paused leader %s", np.name, p.name)
	}
	t.Logf("%s primary again %.1fs after etcd came back", p.name, time.Since(thawed).Seconds())
	must(t, p.exec("CREATE TABLE after_etcd (id int)"))
}

// pauseCluster runs `pgwarden pause` with via's configuration and waits
// until every agent says it is paused.
func pauseCluster(t *testing.T, c *cluster, via *node) {
	t.Helper()
	pgwarden(t, "pause", "-c", via.cfgPath)
	harness.WaitFor(t, 10*time.Second, "pause seen by every agent", func() (bool, error) {
		for _, n := range c.nodes {
			if st := n.status(); st == nil || st["pause"] != true {
				return false, fmt.Errorf("%s not paused", n.name)
			}
		}
		return true, nil
	})
}
