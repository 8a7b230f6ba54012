//go:build integration

package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/integration/harness"
	"github.com/pgwarden/pgwarden/rest/resttest"
)

// TestTLSPeersReachableCluster: with rest.tls on and
// verify_client (one CA; each member's certificate, issued for serverAuth
// only, is also its client certificate), the agents read each other's
// /patroni, so a switchover through `pgwarden switchover` over TLS
// completes (its leader reads the candidate's WAL position), and in a kill
// -9 failover the replica with the furthest WAL wins while the one behind
// compares and waits instead of racing for the key. The CLI with a wrong CA
// fails with one line and changes nothing.
func TestTLSPeersReachableCluster(t *testing.T) {
	start := time.Now()
	c := newCluster(t, clusterOpts{ttl: 5, retry: 2, tls: true})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	t.Logf("bootstrapped over TLS in %.1fs: primary %s", time.Since(start).Seconds(), p.name)

	noCert := c.tlsClient(2*time.Second, false)
	for _, n := range c.nodes {
		if resp, err := noCert.Get(n.api("/patroni")); err == nil {
			resp.Body.Close()
			t.Fatalf("%s answered a client without a certificate (verify_client is on)", n.name)
		}
	}

	// A wrong CA: one line naming the fix, exit 1, no switchover.
	wrong := resttest.NewCA(t, harness.Dir(t, "wrong-pki"), "wrong-ca")
	_, errOut, code := runCLI(t, "", "switchover", "-c", p.cfgPath, "--force", "--ca", wrong.File)
	if code != 1 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, "not trusted") || !strings.Contains(errOut, "--ca") {
		t.Fatalf("switchover with a wrong CA: exit %d, stderr %q; want exit 1 and one line saying the certificate is not trusted", code, errOut)
	}
	if got := c.primary(5 * time.Second); got != p {
		t.Fatalf("a refused switchover moved the primary to %s", got.name)
	}

	// The switchover: the CLI reaches the leader's API over TLS with the
	// CA and client certificate of the node's file, and the leader reads
	// the candidate's WAL position over TLS before releasing the key.
	var cand *node
	for _, n := range c.nodes {
		if n != p {
			cand = n
			break
		}
	}
	sw := time.Now()
	out := pgwarden(t, "switchover", "-c", p.cfgPath, "--candidate", cand.name, "--force")
	if !strings.Contains(out, "switchover done") {
		t.Fatalf("switchover: %q", out)
	}
	np := c.primary(30*time.Second, p)
	if np != cand {
		t.Fatalf("switchover promoted %s, want %s", np.name, cand.name)
	}
	c.waitReplicas(60*time.Second, np)
	t.Logf("switchover %s -> %s over TLS in %.1fs", p.name, np.name, time.Since(sw).Seconds())

	// The failover: one replica stops receiving WAL, rows are committed,
	// the primary dies. Only peers reached over TLS tell the replicas who
	// is ahead.
	behind, ahead := oneReplicaBehind(t, c, np, 50)
	// Both publish their positions over TLS: the one ahead reports more.
	harness.WaitFor(t, 10*time.Second, "the replicas' /patroni over TLS shows who is ahead", func() (bool, error) {
		a, b := lsnOf(ahead), lsnOf(behind)
		return a > b && b > 0, fmt.Errorf("/patroni positions: %s %d, %s %d", ahead.name, a, behind.name, b)
	})
	_, behindMark := behind.log.Since(0)
	_, aheadMark := ahead.log.Since(0)
	killed := time.Now()
	np.killHard()
	winner := c.primary(60*time.Second, np)
	t.Logf("failover to %s %.1fs after kill -9 of %s", winner.name, time.Since(killed).Seconds(), np.name)
	if winner != ahead {
		t.Fatalf("promoted %s, want %s, the replica with the furthest WAL (peers not compared over TLS?)", winner.name, ahead.name)
	}
	if n, err := winner.queryInt("SELECT count(*) FROM t"); err != nil || n != 50 {
		t.Fatalf("new primary has %d rows (%v), want all 50", n, err)
	}
	behindLog, _ := behind.log.Since(behindMark)
	aheadLog, _ := ahead.log.Since(aheadMark)
	if strings.Contains(behindLog, "action=acquire") {
		t.Errorf("%s, behind, raced for the leader key: it did not see %s's WAL over TLS", behind.name, ahead.name)
	}
	for _, l := range []struct {
		n     *node
		log   string
		other *node
	}{{behind, behindLog, ahead}, {ahead, aheadLog, behind}} {
		for _, line := range strings.Split(l.log, "\n") {
			if strings.Contains(line, "peer unreachable") && strings.Contains(line, "member="+l.other.name) {
				t.Errorf("%s could not reach %s during the failover: %s", l.n.name, l.other.name, line)
			}
		}
	}
	if i := strings.Index(behindLog, "is a better candidate"); i >= 0 {
		t.Logf("%s compared WAL with its peers: ...%s", behind.name, strings.SplitN(behindLog[i:], "\n", 2)[0])
	}
	t.Logf("whole test: %.1fs", time.Since(start).Seconds())
}
