//go:build integration

package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// BenchmarkManyScopes: one etcd carrying 40 single-node clusters (each its
// own scope, as shards behind PL/Proxy are) and one 3-node cluster, all on
// this machine. Reported: etcd's requests per second and CPU while idle
// (per agent, and extrapolated to 100 agents: a linear extrapolation from
// 43, stated as such), leader keys lost among the single-node scopes (a
// lease that expired: must be 0), and the 3-node scope's failover (kill -9
// of leader agent and postmaster) beside the same failover measured alone
// on the same etcd earlier in the run. 43 PostgreSQL servers share 2
// cores: the failover figure is reported, not asserted.
func BenchmarkManyScopes(b *testing.B) {
	const scopes, rounds = 40, 3
	e := harness.StartEtcd(b)

	solo := newCluster(b, clusterOpts{ttl: 10, retry: 3, scope: "alone", etcd: e})
	alone := scopeFailovers(b, solo, rounds)
	solo.stop()

	var lost atomic.Int64
	watchLostLeaders(b, e, "/pgwarden/s", &lost)
	start := time.Now()
	var shards []*cluster
	for i := range scopes {
		shards = append(shards, newCluster(b, clusterOpts{nodes: 1, ttl: 10, retry: 3, scope: fmt.Sprintf("s%02d", i), etcd: e}))
	}
	main := newCluster(b, clusterOpts{ttl: 10, retry: 3, scope: "main", etcd: e})
	for _, s := range shards {
		s.primary(5 * time.Minute)
	}
	p := main.primary(5 * time.Minute)
	main.waitReplicas(5*time.Minute, p)
	say("%d single-node scopes and a 3-node scope up in %s", scopes, time.Since(start).Round(time.Second))
	agents := float64(scopes + len(main.nodes))

	const window = 60 * time.Second
	etcdPID := e.PID()
	cpu0 := cpu(etcdPID)
	req0, ka0 := etcdRequests(e.Endpoint)
	time.Sleep(window) // the measurement window itself
	req1, ka1 := etcdRequests(e.Endpoint)
	etcdCPU := (cpu(etcdPID) - cpu0) / window.Seconds() // CPU-seconds per second
	report(b, "scopes_etcd_requests_per_s", (req1-req0)/window.Seconds(), "req/s")
	report(b, "scopes_etcd_requests_per_agent", (req1-req0)/window.Seconds()/agents, "req/s")
	report(b, "scopes_lease_keepalives_per_s", (ka1-ka0)/window.Seconds(), "req/s")
	report(b, "scopes_etcd_cpu", etcdCPU, "cpu-s/s")
	report(b, "scopes_etcd_cpu_per_100_agents", etcdCPU*100/agents, "cpu-s/s")
	say("etcd CPU per 100 idle agents is extrapolated linearly from %g agents", agents)

	beside := scopeFailovers(b, main, rounds)
	report(b, "scopes_failover_alone_median", median(alone), "s")
	report(b, "scopes_failover_beside_40_median", median(beside), "s")
	report(b, "scopes_leader_keys_lost", float64(lost.Load()), "keys")
	say("3-node failover alone: %s; beside %d scopes: %s; single-node leader keys lost: %d", fmtSecs(alone), scopes, fmtSecs(beside), lost.Load())
	if lost.Load() > 0 {
		b.Errorf("%d single-node scopes lost their leader key while idle", lost.Load())
	}
}

// scopeFailovers kills the leader's agent and postmaster rounds times and
// returns the seconds until another member accepted a write.
func scopeFailovers(b *testing.B, c *cluster, rounds int) []float64 {
	p := c.primary(5 * time.Minute)
	c.waitReplicas(5*time.Minute, p)
	must(b, p.exec("CREATE TABLE IF NOT EXISTS t (id serial primary key)"))
	var secs []float64
	for r := range rounds {
		killed := time.Now()
		p.killHard()
		var np *node
		harness.WaitFor(b, 60*time.Second, "a new primary accepting writes", func() (bool, error) {
			for _, n := range c.nodes {
				if n != p && n.exec("INSERT INTO t DEFAULT VALUES") == nil {
					np = n
					return true, nil
				}
			}
			return false, nil
		})
		secs = append(secs, time.Since(killed).Seconds())
		say("%s round %d: %s -> %s in %.2fs", c.opts.scope, r+1, p.name, np.name, secs[len(secs)-1])
		p.start()
		harness.WaitFor(b, 3*time.Minute, p.name+" rejoins", func() (bool, error) {
			return p.probe("/replica") == 200, nil
		})
		p = np
	}
	return secs
}

// watchLostLeaders counts deletions of leader keys under prefix: with no
// fault, a single-node scope's key goes only if its lease expired.
func watchLostLeaders(b *testing.B, e *harness.Etcd, prefix string, lost *atomic.Int64) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 2 * time.Second})
	must(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); cli.Close() })
	wch := cli.Watch(ctx, prefix, clientv3.WithPrefix())
	go func() {
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete && strings.HasSuffix(string(ev.Kv.Key), "/leader") {
					lost.Add(1)
					say("leader key deleted: %s", ev.Kv.Key)
				}
			}
		}
	}()
}

// BenchmarkFailoverThroughPgBouncer: a client writes through the
// PgBouncer of a replica's host (target: primary, one connection, a
// statement every 20 ms with a 3 s timeout) while the leader's agent and
// postmaster are killed (the host lives): the client-visible gap is from
// its last acknowledgement before the kill to its first after.
func BenchmarkFailoverThroughPgBouncer(b *testing.B) {
	const rounds = 5
	c := newCluster(b, clusterOpts{ttl: 10, retry: 3, pgbouncer: true})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	must(b, p.exec("CREATE TABLE pgb (id bigint)"))
	var gaps []float64
	for r := range rounds {
		p = c.primary(60 * time.Second)
		c.waitReplicas(60*time.Second, p)
		var host *node
		for _, n := range c.nodes {
			if n != p {
				host = n
				break
			}
		}
		harness.WaitFor(b, 30*time.Second, host.name+"'s pgbouncer points at "+p.name, func() (bool, error) {
			t, err := host.bouncerTarget()
			return err == nil && strings.HasSuffix(t, fmt.Sprint(p.pgPort)), err
		})
		dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=superpass dbname=app connect_timeout=3", host.bouncerPort)
		ctx, cancel := context.WithCancel(context.Background())
		acks := make(chan time.Time, 100000)
		done := make(chan struct{})
		go func() {
			defer close(done)
			var conn *pgx.Conn
			for i := 0; ctx.Err() == nil && i < 100000; i++ {
				if conn == nil || conn.IsClosed() {
					cfg, err := pgx.ParseConfig(dsn)
					if err != nil {
						return
					}
					// Transaction pooling: no prepared statements.
					cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
					cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
					conn, _ = pgx.ConnectConfig(cctx, cfg)
					ccancel()
					if conn == nil {
						select {
						case <-ctx.Done():
						case <-time.After(20 * time.Millisecond):
						}
						continue
					}
				}
				qctx, qcancel := context.WithTimeout(ctx, 3*time.Second)
				_, err := conn.Exec(qctx, "INSERT INTO pgb VALUES ($1)", i)
				qcancel()
				if err == nil {
					acks <- time.Now()
				}
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		first := func(d time.Duration) time.Time {
			select {
			case at := <-acks:
				return at
			case <-time.After(d):
				b.Fatalf("no acknowledgement through %s's pgbouncer within %s", host.name, d)
				return time.Time{}
			}
		}
		first(10 * time.Second)
		// Drain, then kill: the last acknowledgement before the kill.
		var last time.Time
		for len(acks) > 0 {
			last = <-acks
		}
		if last.IsZero() {
			last = first(time.Second)
		}
		p.killHard()
		killed := time.Now()
		var after time.Time
		for after.IsZero() || !after.After(killed) {
			after = first(60 * time.Second)
		}
		cancel()
		<-done
		gap := after.Sub(last).Seconds()
		gaps = append(gaps, gap)
		say("round %d: %s killed; client on %s's pgbouncer: gap %.2fs", r+1, p.name, host.name, gap)
		p.start()
		harness.WaitFor(b, 120*time.Second, p.name+" rejoins", func() (bool, error) {
			return p.probe("/replica") == 200, nil
		})
	}
	report(b, "failover_pgbouncer_client_gap_median", median(gaps), "s")
	report(b, "failover_pgbouncer_client_gap_max", slices.Max(gaps), "s")
}
