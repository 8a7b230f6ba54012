//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgwarden/pgwarden/integration/harness"
	"github.com/pgwarden/pgwarden/postgres/pgproc"
)

// keyWatch records when the leader key was deleted and when another
// member put it, as etcd's own watch reports them.
type keyWatch struct {
	deleted, taken chan time.Time
	by             chan string
}

func watchLeaderKey(t *testing.T, c *cluster, old string) *keyWatch {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.etcd.Endpoint}, DialTimeout: 2 * time.Second})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); cli.Close() })
	kw := &keyWatch{deleted: make(chan time.Time, 1), taken: make(chan time.Time, 1), by: make(chan string, 1)}
	wch := cli.Watch(ctx, "/pgwarden/"+c.opts.scope+"/leader")
	go func() {
		var del, put bool
		for resp := range wch {
			for _, ev := range resp.Events {
				switch {
				case ev.Type == clientv3.EventTypeDelete && !del:
					del = true
					kw.deleted <- time.Now()
				case ev.Type == clientv3.EventTypePut && string(ev.Kv.Value) != old && !put:
					put = true
					kw.taken <- time.Now()
					kw.by <- string(ev.Kv.Value)
				}
			}
		}
	}()
	// The watch is established before this returns: a revision read
	// through the same client orders after it.
	_, err = cli.Get(ctx, "/pgwarden/"+c.opts.scope+"/leader")
	must(t, err)
	return kw
}

func waitTime(t *testing.T, ch <-chan time.Time, d time.Duration, what string) time.Time {
	t.Helper()
	select {
	case at := <-ch:
		return at
	case <-time.After(d):
		t.Fatalf("%s: not within %s", what, d)
		return time.Time{}
	}
}

// TestDeadAgentFencesBeforeTheKeyGoes: kill -9 of the leader's agent
// alone, PostgreSQL alive and a writer on it: the postmaster is gone (its
// exit seen through a pidfd) before etcd reports the key deleted, a
// replica takes the key well within ttl/2, and the old primary
// acknowledged nothing after its postmaster died.
func TestDeadAgentFencesBeforeTheKeyGoes(t *testing.T) {
	const ttl = 20
	c := newCluster(t, clusterOpts{ttl: ttl, retry: 2})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	must(t, p.exec("CREATE TABLE hb (id int)"))
	kw := watchLeaderKey(t, c, p.name)
	exited, stop := pgproc.WatchExit(p.postmasterPID())
	defer stop()
	// Each acknowledged write with when it was sent: the one in flight
	// when the postmaster dies may be acknowledged a moment after the test
	// sees the exit (its commit came first; the two clocks are read by two
	// goroutines), but none sent after the exit may be.
	type ack struct{ sent, at time.Time }
	acks := make(chan ack, 10000)
	first := make(chan time.Time, 1)
	wctx, cancelWriter := context.WithCancel(context.Background())
	defer cancelWriter()
	go func() {
		for i := 0; wctx.Err() == nil && i < 100000; i++ {
			sent := time.Now()
			if p.exec(fmt.Sprintf("INSERT INTO hb VALUES (%d)", i)) == nil {
				acks <- ack{sent, time.Now()}
				select {
				case first <- sent:
				default:
				}
			}
		}
	}()
	waitTime(t, first, 10*time.Second, "the writer's first acknowledgement")
	killed := time.Now()
	must(t, syscall.Kill(p.agent.PID(), syscall.SIGKILL))
	var fenced time.Time
	select {
	case <-exited:
		fenced = time.Now()
	case <-time.After(10 * time.Second):
		t.Fatal("the dead agent's postmaster still runs 10 s after the kill")
	}
	deleted := waitTime(t, kw.deleted, ttl*time.Second, "the leader key deleted")
	taken := waitTime(t, kw.taken, ttl*time.Second, "another member taking the key")
	cancelWriter()
	t.Logf("postmaster gone %s after the kill, key deleted %s after, taken by %s %s after",
		fenced.Sub(killed).Round(time.Millisecond), deleted.Sub(killed).Round(time.Millisecond), <-kw.by, taken.Sub(killed).Round(time.Millisecond))
	if !deleted.After(fenced) {
		t.Fatalf("the key was deleted %s before the postmaster died", fenced.Sub(deleted))
	}
	if taken.Sub(killed) > ttl/2*time.Second {
		t.Fatalf("the key was taken %s after the kill: not handed back (ttl %d)", taken.Sub(killed), ttl)
	}
	close(acks)
	for a := range acks {
		if a.sent.After(fenced) || a.at.After(fenced.Add(time.Second)) {
			t.Fatalf("the old primary acknowledged a write sent %s and answered %s after its postmaster died",
				a.sent.Sub(fenced), a.at.Sub(fenced))
		}
	}
}

// TestDeadAgentAndServerWithBusyBackend: kill -9 of the leader's agent and
// postmaster while a CPU-bound INSERT runs: the watchdog kills that
// orphaned backend (its client gets an error, never an acknowledgement),
// hands the key back, and a replica is primary and writable before ttl/2.
func TestDeadAgentAndServerWithBusyBackend(t *testing.T) {
	const ttl = 20
	c := newCluster(t, clusterOpts{ttl: ttl, retry: 2})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	must(t, p.exec("CREATE TABLE busy (id bigint)"))
	_, busy := busyStatement(t, p)
	killed := time.Now()
	p.killHard()
	np := c.primary(ttl*time.Second, p)
	must(t, np.exec("CREATE TABLE after_failover (id int)"))
	writable := time.Since(killed)
	select {
	case err := <-busy:
		if err == nil {
			t.Fatal("the busy statement on the killed primary was acknowledged")
		}
		t.Logf("busy statement ended with: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the busy statement's client still waits 10 s after the kill: its backend lives")
	}
	t.Logf("%s primary and writable %.2fs after kill -9 of agent and postmaster (ttl %d)", np.name, writable.Seconds(), ttl)
	if writable > ttl/2*time.Second {
		t.Fatalf("new primary writable %.1fs after the kill: the key was not handed back (ttl %d)", writable.Seconds(), ttl)
	}
	if n, err := np.queryInt("SELECT count(*) FROM busy"); err != nil || n != 0 {
		t.Fatalf("rows of the busy statement on the new primary: %d (%v)", n, err)
	}
}

// TestHandbackWithoutEtcdLeavesTheLease: the leader's etcd link is cut as
// its agent is killed. The watchdog fences at once but cannot delete the
// key: the lease expires and a replica takes over at the usual time
// (about ttl after the agent's last renewal), not before.
func TestHandbackWithoutEtcdLeavesTheLease(t *testing.T) {
	const ttl = 10
	// Each member reaches etcd through its own proxy, so the leader's
	// (whichever it is) can be cut alone.
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	proxies := map[int]*toxiproxy.Proxy{}
	c := newCluster(t, clusterOpts{ttl: ttl, retry: 3, etcdVia: func(c *cluster) map[int]string {
		eps := map[int]string{}
		for i := range 3 {
			px := toxiproxy.NewProxy(srv, fmt.Sprintf("etcd-%d", i), fmt.Sprintf("127.0.0.1:%d", harness.Port(t)), c.etcd.Endpoint)
			must(t, srv.Collection.Add(px, true))
			t.Cleanup(px.Stop)
			proxies[i], eps[i] = px, px.Listen
		}
		return eps
	}})
	p := c.primary(90 * time.Second)
	proxy := proxies[p.index]
	c.waitReplicas(60*time.Second, p)
	kw := watchLeaderKey(t, c, p.name)
	pm := p.postmasterPID()
	for _, dir := range []string{"upstream", "downstream"} {
		_, err := proxy.Toxics.AddToxicJson(strings.NewReader(fmt.Sprintf(`{"name":"cut_%s","type":"timeout","stream":%q,"attributes":{"timeout":0}}`, dir, dir)))
		must(t, err)
	}
	killed := time.Now()
	must(t, syscall.Kill(p.agent.PID(), syscall.SIGKILL))
	harness.WaitFor(t, 10*time.Second, "the watchdog fences the postmaster", func() (bool, error) {
		return !pgproc.Alive(pm), fmt.Errorf("postmaster %d alive", pm)
	})
	fenced := time.Since(killed)
	taken := waitTime(t, kw.taken, 3*ttl*time.Second, "a replica taking the key")
	// The key goes with the lease (etcd reports its expiry as a delete),
	// renewed at most loop_wait before the kill: not before ttl - 2 s.
	deleted := waitTime(t, kw.deleted, time.Second, "the leader key's delete")
	took := taken.Sub(killed)
	t.Logf("fenced %s after the kill; key gone %.2fs and taken %.2fs after it (ttl %d), by %s",
		fenced.Round(time.Millisecond), deleted.Sub(killed).Seconds(), took.Seconds(), ttl, <-kw.by)
	if d := deleted.Sub(killed); d < (ttl-2)*time.Second {
		t.Fatalf("the key was deleted %s after the kill, before its lease could expire, though the watchdog could not reach etcd", d)
	}
	if took < (ttl-2)*time.Second {
		t.Fatalf("key taken %.1fs after the kill: before the lease could expire (ttl %d)", took.Seconds(), ttl)
	}
	harness.WaitFor(t, 10*time.Second, "the watchdog logs the failed hand-back", func() (bool, error) {
		l, _ := p.log.Since(0)
		if strings.Contains(l, "leader key handed back") {
			return false, errors.New("it says it handed the key back")
		}
		return strings.Contains(l, "hand-back of the leader key failed"), nil
	})
}
