//go:build integration

package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// Elections and cascades on real PostgreSQL 15.

// pgCtl runs pg_ctl on n's data directory by hand (no agent), retrying
// while a killed postmaster's lock file is still held (its zombie, or
// backends on their way out).
func pgCtl(t *testing.T, n *node, args ...string) {
	t.Helper()
	var out []byte
	err := harness.Poll(20*time.Second, func() (bool, error) {
		cmd := exec.Command(filepath.Join(harness.PgBinDir(t), "pg_ctl"), append([]string{"-D", n.dataDir(), "-w", "-t", "60"}, args...)...)
		var err error
		out, err = cmd.CombinedOutput()
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("pg_ctl %v on %s: %v: %s", args, n.name, err, out)
	}
}

// TestDivergedFormerPrimaryIsNotPromoted: a former primary that went on
// writing on timeline 1 after a replica was promoted to timeline 2 has the
// higher raw LSN, but its WAL is not on the newest timeline's history: it
// is not promoted, and the commits made on timeline 2 survive. (Before:
// candidates were ordered by LSN alone and it won, losing them.)
func TestDivergedFormerPrimaryIsNotPromoted(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 5, retry: 2})
	a := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, a)
	must(t, a.exec("CREATE TABLE t (id int primary key)"))
	must(t, a.exec("INSERT INTO t SELECT generate_series(1, 100)"))
	var others []*node
	for _, n := range c.nodes {
		if n != a {
			others = append(others, n)
		}
	}
	waitRows(t, 20*time.Second, 100, others...)
	a.killHard()
	b := c.primary(60*time.Second, a)
	must(t, b.exec("INSERT INTO t SELECT generate_series(1000, 1009)"))
	var rest *node
	for _, n := range others {
		if n != b {
			rest = n
		}
	}
	waitRows(t, 20*time.Second, 110, rest)
	b.killHard()
	rest.killHard()

	// The old primary, by hand, writes on timeline 1 past the fork.
	pgCtl(t, a, "-l", filepath.Join(a.dir, "manual.log"), "start")
	must(t, a.exec("INSERT INTO t SELECT generate_series(5000, 25000)"))
	var lsn string
	must(t, a.queryRow("SELECT pg_current_wal_lsn()::text", &lsn))
	pgCtl(t, a, "-m", "fast", "stop")
	t.Logf("diverged %s on timeline 1 up to %s", a.name, lsn)

	// Once the dead leader's key has expired, the diverged node's agent
	// starts first, alone: the one running candidate, with the highest
	// LSN. It must not take over.
	harness.WaitFor(t, 30*time.Second, "the dead leader's key expired", func() (bool, error) {
		out := pgwarden(t, "list", "-c", a.cfgPath)
		return strings.Contains(out, "no leader"), fmt.Errorf("list: %s", out)
	})
	a.start()
	harness.WaitFor(t, 60*time.Second, "the diverged node running, refusing to take over", func() (bool, error) {
		st := a.status()
		reason, _ := st["reason"].(string)
		return strings.Contains(reason, "diverged"), fmt.Errorf("state %v, decision %q", st["state"], reason)
	})
	for i := 0; i < 30; i++ {
		if code := a.probe("/primary"); code == 200 {
			t.Fatalf("the diverged former primary %s was promoted", a.name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.start()
	rest.start()
	np := c.primary(120 * time.Second)
	if np == a {
		t.Fatalf("the diverged former primary %s was promoted", a.name)
	}
	n, err := np.queryInt("SELECT count(*) FROM t WHERE id BETWEEN 1000 AND 1009")
	if err != nil || n != 10 {
		t.Fatalf("new primary %s has %d of the 10 rows committed on timeline 2 (%v)", np.name, n, err)
	}
	if n, _ := np.queryInt("SELECT count(*) FROM t WHERE id >= 5000"); n != 0 {
		t.Fatalf("new primary %s has %d rows of the diverged timeline", np.name, n)
	}
}

// TestCascadeStreamsFromItsReplica: node3 is tagged replicatefrom: node2.
// It streams from node2 with a slot there (the leader keeps none for it),
// falls back to the leader while node2 is down, returns to node2 when it
// is back, and follows through switchovers; at every step no node keeps a
// slot that no one reads. In synchronous mode the synchronous standby is
// one streaming from the leader, never the cascaded node3 (whose higher
// priority would otherwise pick it: FIRST 1 (node3), and every commit
// would block). (Before: only the leader created slots: node3 logged
// "replication slot node3 does not exist" every 5 s and never streamed
// from node2, while the leader kept a reserved slot node3 that nobody read.)
func TestCascadeStreamsFromItsReplica(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 5, retry: 2, priorities: []int{100, 50, 200},
		nodeExtra: map[int]string{2: "tags: {replicatefrom: node2}"}})
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]
	p := c.primary(90 * time.Second)
	c.waitReplicas(90*time.Second, p)
	if p != n1 {
		if code, body := p.post("POST", "/switchover", `{"candidate":"node1"}`); code != 200 {
			t.Fatalf("switchover to node1: %d %s", code, body)
		}
	}
	upstreamOf := func(n *node) string {
		var app string
		_ = n.queryRow("SELECT coalesce(sender_host || ':' || sender_port, '') FROM pg_stat_wal_receiver WHERE status = 'streaming'", &app)
		return app
	}
	addr := func(n *node) string { return fmt.Sprintf("127.0.0.1:%d", n.pgPort) }
	streamsFrom := func(what string, n, up *node, within time.Duration) {
		t.Helper()
		harness.WaitFor(t, within, what, func() (bool, error) {
			got := upstreamOf(n)
			return got == addr(up), fmt.Errorf("%s streams from %q, want %s (%s)", n.name, got, up.name, addr(up))
		})
	}
	noIdleSlots := func(when string) {
		t.Helper()
		harness.WaitFor(t, 20*time.Second, "no slot that no one reads ("+when+")", func() (bool, error) {
			for _, n := range c.nodes {
				var idle string
				if err := n.queryRow("SELECT coalesce(string_agg(slot_name, ','), '') FROM pg_replication_slots WHERE NOT active", &idle); err != nil {
					return false, err
				}
				if idle != "" {
					return false, fmt.Errorf("%s keeps unread slots %s", n.name, idle)
				}
			}
			return true, nil
		})
	}
	streamsFrom("node2 streams from the leader", n2, n1, 60*time.Second)
	streamsFrom("node3 cascades from node2", n3, n2, 60*time.Second)
	noIdleSlots("cascade")

	// Synchronous mode: node2 (direct) is the synchronous standby.
	if code, body := n1.post("PATCH", "/config", `{"synchronous_mode": true}`); code != 200 {
		t.Fatalf("PATCH /config: %d %s", code, body)
	}
	harness.WaitFor(t, 30*time.Second, "node2 synchronous", func() (bool, error) {
		var names string
		err := n1.queryRow("SELECT current_setting('synchronous_standby_names')", &names)
		return err == nil && strings.Contains(names, "node2"), fmt.Errorf("synchronous_standby_names %q (%v)", names, err)
	})
	var names string
	must(t, n1.queryRow("SELECT current_setting('synchronous_standby_names')", &names))
	if strings.Contains(names, "node3") {
		t.Fatalf("the cascaded node3 named synchronous: %q", names)
	}
	// A commit does not block (exec gives up after 5 s).
	must(t, n1.exec("CREATE TABLE sync_ok (id int)"))
	must(t, n1.exec("INSERT INTO sync_ok VALUES (1)"))
	if code, body := n1.post("PATCH", "/config", `{"synchronous_mode": false}`); code != 200 {
		t.Fatalf("PATCH /config: %d %s", code, body)
	}

	// node2 down: node3 falls back to the leader; node2 back: returns.
	must(t, n2.agent.Stop(syscall.SIGTERM, 60*time.Second))
	streamsFrom("node3 falls back to the leader", n3, n1, 60*time.Second)
	n2.start()
	streamsFrom("node2 streams again", n2, n1, 90*time.Second)
	streamsFrom("node3 returns to node2", n3, n2, 60*time.Second)
	noIdleSlots("after node2 came back")

	// Through a switchover to node2 (node3 then streams from the leader
	// it names) and back.
	c.waitReplicas(60*time.Second, n1)
	if code, body := n1.post("POST", "/switchover", `{"candidate":"node2"}`); code != 200 {
		t.Fatalf("switchover to node2: %d %s", code, body)
	}
	streamsFrom("node3 streams from node2, now the leader", n3, n2, 60*time.Second)
	streamsFrom("node1 follows node2", n1, n2, 90*time.Second)
	noIdleSlots("node2 leads")
	c.waitReplicas(60*time.Second, n2)
	if code, body := n2.post("POST", "/switchover", `{"candidate":"node1"}`); code != 200 {
		t.Fatalf("switchover to node1: %d %s", code, body)
	}
	streamsFrom("node2 follows node1", n2, n1, 90*time.Second)
	streamsFrom("node3 cascades from node2 again", n3, n2, 60*time.Second)
	noIdleSlots("node1 leads again")
}
