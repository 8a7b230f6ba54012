//go:build integration

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pgwarden/pgwarden/integration/harness"
	"github.com/pgwarden/pgwarden/postgres/pgproc"
	"github.com/pgwarden/pgwarden/watchdog"
)

// cluster is the campaign's system under test. Every link an agent or a
// replica uses runs through a proxy: agent i -> etcd member j
// (etcd-i-j), anyone -> node i's PostgreSQL at its connect_address (pg-i,
// replication cut by its replcut switch), peers -> node i's REST API at
// its connect_address (rest-i). Clients, the campaign's probes and the
// operator's switchover go straight to the listen addresses, so a leader
// cut from etcd is still reachable by its clients.
type cluster struct {
	t     testing.TB
	o     opts
	etcd  []*member
	nodes []*node
	tox   *toxiproxy.ApiServer
	// proxies by name.
	proxies map[string]*toxiproxy.Proxy
	hc      *http.Client
	// bouncer is the PgBouncer on the last node; its agent points it at
	// the leader.
	bouncer     *harness.Proc
	bouncerPort int
}

type opts struct {
	ttl, loopWait, retry float64
	sync                 bool
}

type member struct {
	name, dir      string
	client, peer   int
	initialCluster string
	proc           *harness.Proc
}

type node struct {
	c              *cluster
	index          int
	name           string
	dir            string
	cfgPath        string
	pgPort, pgAddr int // listen port, proxy port (connect_address)
	apiPort        int
	apiAddr        int
	agent          *harness.Proc
}

func newCluster(t testing.TB, o opts) *cluster {
	t.Helper()
	c := &cluster{t: t, o: o, proxies: map[string]*toxiproxy.Proxy{}, hc: &http.Client{Timeout: 2 * time.Second}}
	c.tox = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	c.startEtcd()
	for i := range 3 {
		n := &node{c: c, index: i, name: fmt.Sprintf("node%d", i+1)}
		n.dir = harness.Dir(t, n.name)
		n.pgPort, n.apiPort = harness.Port(t), harness.Port(t)
		n.pgAddr, n.apiAddr = harness.Port(t), harness.Port(t)
		c.proxy(fmt.Sprintf("pg-%d", i+1), n.pgAddr, n.pgPort)
		c.proxy(fmt.Sprintf("rest-%d", i+1), n.apiAddr, n.apiPort)
		c.addToxic(fmt.Sprintf("pg-%d", i+1),
			fmt.Sprintf(`{"name":"replcut","type":"replcut","stream":"upstream","attributes":{"switch":%q}}`, c.replSwitchName(i)))
		var eps []string
		for j, m := range c.etcd {
			port := harness.Port(t)
			c.proxy(fmt.Sprintf("etcd-%d-%d", i+1, j+1), port, m.client)
			eps = append(eps, fmt.Sprintf("127.0.0.1:%d", port))
		}
		c.nodes = append(c.nodes, n)
		n.writeConfig(eps)
	}
	c.startBouncer()
	t.Cleanup(c.stop)
	for _, n := range c.nodes {
		n.start()
	}
	return c
}

func (c *cluster) replSwitchName(i int) string {
	return fmt.Sprintf("%s/pg-%d", c.t.Name(), i+1)
}

// proxy starts a proxy from 127.0.0.1:listen to 127.0.0.1:upstream.
func (c *cluster) proxy(name string, listen, upstream int) {
	p := toxiproxy.NewProxy(c.tox, name, fmt.Sprintf("127.0.0.1:%d", listen), fmt.Sprintf("127.0.0.1:%d", upstream))
	must(c.t, c.tox.Collection.Add(p, true))
	c.proxies[name] = p
}

// addToxic adds a toxic (toxiproxy's JSON form) to a proxy.
func (c *cluster) addToxic(proxy, js string) {
	if _, err := c.proxies[proxy].Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		c.t.Fatalf("toxic %s on %s: %v", js, proxy, err)
	}
}

// removeToxic removes a toxic; the connections it held are closed.
func (c *cluster) removeToxic(proxy, name string) {
	if err := c.proxies[proxy].Toxics.RemoveToxic(context.Background(), name); err != nil {
		c.t.Errorf("remove toxic %s from %s: %v", name, proxy, err)
	}
}

func (c *cluster) startEtcd() {
	t := c.t
	var peers []string
	for i := range 3 {
		m := &member{name: fmt.Sprintf("e%d", i+1), client: harness.Port(t), peer: harness.Port(t)}
		m.dir = harness.Dir(t, "etcd-"+m.name)
		c.etcd = append(c.etcd, m)
		peers = append(peers, fmt.Sprintf("%s=http://127.0.0.1:%d", m.name, m.peer))
	}
	for _, m := range c.etcd {
		m.initialCluster = strings.Join(peers, ",")
		m.start(t)
	}
	for _, m := range c.etcd {
		m.waitHealthy(t, 30*time.Second)
	}
}

func (m *member) start(t testing.TB) {
	cu := fmt.Sprintf("http://127.0.0.1:%d", m.client)
	pu := fmt.Sprintf("http://127.0.0.1:%d", m.peer)
	cmd := exec.Command(harness.LookPath(t, "etcd", "etcd-server"),
		"--name", m.name, "--data-dir", filepath.Join(m.dir, "data"),
		"--listen-client-urls", cu, "--advertise-client-urls", cu,
		"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
		"--initial-cluster", m.initialCluster, "--initial-cluster-state", "new",
		"--initial-cluster-token", "chaos", "--log-level", "warn")
	cmd.Stdout = appendFile(t, filepath.Join(m.dir, "etcd.log"))
	m.proc = harness.StartQuiet(t, "etcd-"+m.name, cmd)
}

func (m *member) waitHealthy(t testing.TB, d time.Duration) {
	hc := &http.Client{Timeout: time.Second}
	harness.WaitFor(t, d, "etcd member "+m.name+" healthy", func() (bool, error) {
		if m.proc.Exited() {
			return false, fmt.Errorf("exited")
		}
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/health", m.client))
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Errorf("health %d", resp.StatusCode)
	})
}

func (n *node) writeConfig(etcd []string) {
	c := n.c
	pooler := ""
	if n.index == 2 {
		c.bouncerPort = harness.Port(c.t)
		pooler = fmt.Sprintf(`pooler:
  pgbouncer:
    admin_dsn: "host=127.0.0.1 port=%d dbname=pgbouncer user=pgbouncer connect_timeout=2"
    databases_file: %s
    pause_timeout: 2
    databases:
      app: {dbname: postgres, target: primary}
`, c.bouncerPort, filepath.Join(n.dir, "pgbouncer-databases.ini"))
	}
	cfg := harness.NodeYAML{
		Name: n.name, Scope: "chaos", Endpoints: etcd,
		RESTPort: n.apiPort, RESTExtra: fmt.Sprintf("  connect_address: 127.0.0.1:%d", n.apiAddr),
		BinDir: harness.PgBinDir(c.t), DataDir: filepath.Join(n.dir, "data"), SocketDir: n.dir, PGPort: n.pgPort,
		PGExtra:   fmt.Sprintf("  connect_address: 127.0.0.1:%d", n.pgAddr),
		Superuser: "password: superpass", Replication: "password: replpass", MaxConnections: 60,
		AfterParams: "    wal_retrieve_retry_interval: 1s", LogLevel: "info", Pooler: pooler,
		TTL: c.o.ttl, LoopWait: c.o.loopWait, Retry: c.o.retry, ClusterExtra: fmt.Sprintf("  synchronous_mode: %v", c.o.sync),
	}.Render()
	n.cfgPath = filepath.Join(n.dir, "pgwarden.yaml")
	must(c.t, os.WriteFile(n.cfgPath, []byte(cfg), 0o600))
}

// startBouncer runs node3's PgBouncer; its agent writes the databases
// file (the path writeConfig gave it).
func (c *cluster) startBouncer() {
	n := c.nodes[2]
	c.bouncer = harness.StartPgBouncer(c.t, n.dir, c.bouncerPort, "superpass", filepath.Join(n.dir, "pgbouncer.log")).Proc
}

func (c *cluster) stop() {
	if c.t.Failed() {
		for _, n := range c.nodes {
			if _, err := os.Stat(filepath.Join(n.dir, "data.log")); err == nil {
				c.t.Logf("%s: end of PostgreSQL's log:\n%s", n.name, harness.Tail(filepath.Join(n.dir, "data.log"), 4000))
			}
		}
	}
	for _, n := range c.nodes {
		n.resume()
		if n.agent != nil && !n.agent.Exited() {
			_ = n.agent.Stop(syscall.SIGTERM, 30*time.Second)
		}
	}
	for _, n := range c.nodes {
		if pid := n.postmasterPID(); pid > 0 && syscall.Kill(pid, 0) == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, p := range c.proxies {
		p.Stop()
	}
}

func (n *node) start() {
	cmd := exec.Command(harness.Binary(n.c.t), "agent", "-c", n.cfgPath)
	cmd.Stdout = appendFile(n.c.t, filepath.Join(n.dir, "agent.log"))
	n.agent = harness.StartQuiet(n.c.t, n.name, cmd)
}

func (n *node) dataDir() string { return filepath.Join(n.dir, "data") }

func (n *node) postmasterPID() int {
	pf, _ := pgproc.ReadPIDFile(n.dataDir())
	return pf.PID
}

func (n *node) watchdogPID() int { return watchdog.HolderPID(n.dataDir()) }

// resume sends SIGCONT to the agent and its watchdog (a heal, and the
// cleanup's first step: a stopped agent ignores SIGTERM).
func (n *node) resume() {
	if n.agent != nil && !n.agent.Exited() {
		_ = n.agent.Resume()
	}
	if pid := n.watchdogPID(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
}

func (n *node) dsn() string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=superpass dbname=postgres connect_timeout=2 sslmode=disable", n.pgPort)
}

func (n *node) api(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", n.apiPort, path) }

func (n *node) probe(path string) int {
	resp, err := n.c.hc.Get(n.api(path))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (n *node) status() map[string]any {
	resp, err := n.c.hc.Get(n.api("/patroni"))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var m map[string]any
	if json.NewDecoder(resp.Body).Decode(&m) != nil {
		return nil
	}
	return m
}

// timeline is the node's timeline from its API, asked up to 5 times (0:
// unknown, which the checker does not count as a change).
func (n *node) timeline() uint32 {
	for i := 0; i < 5; i++ {
		if tl, ok := n.status()["timeline"].(float64); ok && tl > 0 {
			return uint32(tl)
		}
	}
	return 0
}

// dataDirProcs are the processes working in the node's data directory.
func (n *node) dataDirProcs() []int {
	ps, _ := pgproc.Processes(n.dataDir())
	return ps
}

// state is the cluster as its health answers tell it: the nodes answering
// /primary and /replica.
func (c *cluster) state() (primaries, replicas []*node) {
	for _, n := range c.nodes {
		switch {
		case n.probe("/primary") == 200:
			primaries = append(primaries, n)
		case n.probe("/replica") == 200:
			replicas = append(replicas, n)
		}
	}
	return primaries, replicas
}

// stableFor is how long one primary with two streaming replicas must be
// seen before the cluster counts as converged: a thawed leader answers
// from its old state for a loop or two before it steps down.
const stableFor = 3 * time.Second

// converged waits, at most d, for one primary and two streaming replicas,
// unchanged for stableFor, and returns the primary; the time it returns
// is when that state was first seen.
func (c *cluster) converged(ctx context.Context, d time.Duration) (*node, time.Time, error) {
	deadline := time.Now().Add(d + stableFor)
	var seen string
	var since time.Time
	var last *node
	for i := 0; time.Now().Before(deadline) && i < int((d+stableFor)/(100*time.Millisecond))+1; i++ {
		p, r := c.state()
		if len(p) == 1 && len(r) == 2 {
			if p[0] != last {
				last, since = p[0], time.Now()
			}
			if time.Since(since) >= stableFor {
				return last, since, nil
			}
		} else {
			last = nil
		}
		seen = fmt.Sprintf("primaries %v, streaming replicas %v", names(p), names(r))
		select {
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil, time.Time{}, fmt.Errorf("after %s: %s", d, seen)
}

func names(ns []*node) []string {
	var s []string
	for _, n := range ns {
		s = append(s, n.name)
	}
	return s
}

func (c *cluster) byPort(port int) string {
	for _, n := range c.nodes {
		if n.pgPort == port {
			return n.name
		}
	}
	return fmt.Sprintf("port %d", port)
}

// setup creates the table the writers fill and the function the busy
// statements spin in (plpgsql checks for interrupts but, like any
// CPU-bound statement, not for the postmaster's death).
func (c *cluster) setup(p *node) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.dsn())
	must(c.t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE TABLE chaos (id bigint PRIMARY KEY, src text NOT NULL);
CREATE FUNCTION chaos_spin(n bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE i bigint := 0;
BEGIN
  WHILE i < n LOOP i := i + 1; END LOOP;
  RETURN i;
END $$;`)
	must(c.t, err)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// appendFile opens a log file that outlives one process (a restarted
// agent appends); the test closes it at its end.
func appendFile(t testing.TB, path string) *os.File {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	must(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}
