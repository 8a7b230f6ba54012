//go:build integration

package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// TestSynchronousModeFailover: with synchronous_mode the leader names one
// streaming replica as synchronous (the sync key, /sync, and PostgreSQL's
// synchronous_standby_names agree); every commit acknowledged under a
// steady writer is on the node promoted when the leader is killed, which
// is that synchronous standby; and the new leader names the remaining
// replica as its synchronous standby.
func TestSynchronousModeFailover(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 5, retry: 2, extra: "  synchronous_mode: true"})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)

	syncOf := func(leader *node, timeout time.Duration) *node {
		t.Helper()
		var s *node
		harness.WaitFor(t, timeout, "one synchronous standby, named alike by /sync and PostgreSQL", func() (bool, error) {
			s = nil
			var codes []string
			for _, n := range c.nodes {
				if n == leader {
					continue
				}
				code := n.probe("/sync")
				codes = append(codes, fmt.Sprintf("%s=%d", n.name, code))
				if code == 200 {
					if s != nil {
						return false, fmt.Errorf("two synchronous standbys: %v", codes)
					}
					s = n
				}
			}
			if s == nil {
				return false, fmt.Errorf("/sync: %v", codes)
			}
			var ssn string
			err := leader.queryRow("SHOW synchronous_standby_names", &ssn)
			return err == nil && ssn == fmt.Sprintf(`FIRST 1 ("%s")`, s.name), fmt.Errorf("synchronous_standby_names %q (%v), /sync: %v", ssn, err, codes)
		})
		return s
	}
	s := syncOf(p, 60*time.Second)
	t.Logf("leader %s, synchronous standby %s", p.name, s.name)
	for _, n := range c.nodes {
		if n != p && n != s {
			if code := n.probe("/async"); code != 200 {
				t.Fatalf("%s: /async = %d, want 200", n.name, code)
			}
		}
	}

	// A writer commits as fast as it can; the leader is killed under it.
	must(t, p.exec("CREATE TABLE t (id int primary key)"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := p.connect(ctx)
	must(t, err)
	acked := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; ctx.Err() == nil; i++ {
			if _, err := conn.Exec(ctx, "INSERT INTO t VALUES ($1)", i); err != nil {
				return
			}
			acked = i
		}
	}()
	harness.WaitFor(t, 20*time.Second, "writer committed 300 rows", func() (bool, error) {
		n, err := p.queryInt("SELECT count(*) FROM t")
		return err == nil && n >= 300, fmt.Errorf("%d rows (%v)", n, err)
	})
	p.killHard()
	<-done
	cancel()
	t.Logf("%d commits acknowledged before the kill", acked)

	np := c.primary(60*time.Second, p)
	if np != s {
		t.Fatalf("promoted %s, want the synchronous standby %s", np.name, s.name)
	}
	var missing int64
	must(t, np.queryRow(fmt.Sprintf("SELECT %d - count(*) FROM t WHERE id <= %d", acked, acked), &missing))
	if missing != 0 {
		t.Fatalf("%d acknowledged commits missing on the new primary %s", missing, np.name)
	}
	s2 := syncOf(np, 60*time.Second)
	if s2 == p || s2 == np {
		t.Fatalf("new synchronous standby %s", s2.name)
	}
	must(t, np.exec("INSERT INTO t VALUES (0)"))
}
