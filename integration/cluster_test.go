//go:build integration

package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/integration/harness"
	"github.com/pgwarden/pgwarden/internal/pgbouncerini"
	"github.com/pgwarden/pgwarden/postgres/pgproc"
	"github.com/pgwarden/pgwarden/rest/resttest"
	"github.com/pgwarden/pgwarden/watchdog"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m, harness.WithBinary, harness.WithScreenshots)) }

// cluster is a real pgwarden cluster: one etcd, N agents each running its
// own PostgreSQL, all on loopback.
type cluster struct {
	t     testing.TB
	etcd  *harness.Etcd
	nodes []*node
	opts  clusterOpts
	// ca signs the members' certificates (when opts.tls or opts.pgTLS).
	ca *resttest.CA
	// hc is the tests' client of the members' REST APIs.
	hc *http.Client
	// etcdVia replaces etcd's endpoint in a node's config (by index).
	etcdVia map[int]string
}

type clusterOpts struct {
	nodes    int
	ttl      float64
	loopWait float64
	retry    float64
	// priorities by node index (default 100).
	priorities []int
	// pgbouncer starts a PgBouncer per node, managed by its agent.
	pgbouncer bool
	// extra YAML appended to every node's config.
	extra string
	// tls turns rest.tls on with verify_client: one CA, and per member a
	// certificate for 127.0.0.1 that it serves and presents to its peers.
	tls bool
	// pgTLS turns postgres.tls on (ssl, verify-full, hostssl) with a
	// certificate per member for 127.0.0.1 from the cluster's CA; the
	// PgBouncers (opts.pgbouncer) then verify the servers against it too.
	pgTLS bool
	// scope is the cluster's scope (default "test"); pgExtra are lines
	// added to every node's postgres section.
	scope   string
	pgExtra string
	// binDir replaces PostgreSQL's bin_dir.
	binDir string
	// restExtra are YAML lines added to every node's rest section.
	restExtra string
	// nodeExtra are YAML lines for one node's config (by index).
	nodeExtra map[int]string
	// etcd, when set, is an etcd the cluster shares with others (its
	// scope keeps them apart); by default each cluster starts its own.
	etcd *harness.Etcd
	// etcdVia, when set, returns the etcd endpoint each node uses instead
	// of etcd's own (by index): a proxy the test can cut.
	etcdVia func(c *cluster) map[int]string
	// etcdExtra are YAML lines added to every node's etcd section.
	etcdExtra string
	// superuser and replication replace "password: ..." of those roles in
	// every node's file (a password_file; "-": none, it comes from env,
	// variables added to every agent's environment); superPass is the
	// superuser's password the tests log in with.
	superuser, replication, superPass string
	env                               []string
}

type node struct {
	c       *cluster
	index   int
	name    string
	dir     string
	cfgPath string
	pgPort  int
	apiPort int
	agent   *harness.Proc
	// bouncer is this node's PgBouncer (when opts.pgbouncer).
	bouncer     *harness.Proc
	bouncerPort int
	// cert and key are this member's certificate (when opts.tls).
	cert, key string
	// pgCert and pgKey are its PostgreSQL server's (when opts.pgTLS).
	pgCert, pgKey string
	// log is everything its agents printed.
	log harness.LockedBuffer
}

func newCluster(t testing.TB, o clusterOpts) *cluster {
	t.Helper()
	if o.nodes == 0 {
		o.nodes = 3
	}
	if o.ttl == 0 {
		o.ttl = 10
	}
	if o.loopWait == 0 {
		o.loopWait = 1
	}
	if o.retry == 0 {
		o.retry = 3
	}
	if o.scope == "" {
		o.scope = "test"
	}
	if o.superuser == "" {
		o.superuser = "password: superpass"
	}
	switch o.replication {
	case "":
		o.replication = "password: replpass"
	case "-":
		o.replication = ""
	}
	if o.superPass == "" {
		o.superPass = "superpass"
	}
	c := &cluster{t: t, opts: o, etcd: o.etcd, hc: httpc}
	if c.etcd == nil {
		c.etcd = harness.StartEtcd(t)
	}
	if o.etcdVia != nil {
		c.etcdVia = o.etcdVia(c)
	}
	if o.tls || o.pgTLS {
		c.ca = resttest.NewCA(t, harness.Dir(t, "pki"), "cluster-ca")
	}
	if o.tls {
		c.hc = c.tlsClient(2*time.Second, true)
	}
	for i := range o.nodes {
		n := &node{c: c, index: i, name: fmt.Sprintf("node%d", i+1), pgPort: harness.Port(t), apiPort: harness.Port(t)}
		n.dir = harness.Dir(t, n.name)
		if o.tls {
			n.cert, n.key = c.ca.Issue(t, n.name)
		}
		if o.pgTLS {
			// Written 0600 by the test's user, who runs PostgreSQL too.
			n.pgCert, n.pgKey = c.ca.Issue(t, n.name+"-pg")
		}
		prio := 100
		if i < len(o.priorities) {
			prio = o.priorities[i]
		}
		n.writeConfig(prio)
		if o.pgbouncer {
			n.startBouncer()
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		n.start()
	}
	// Registered last, so it runs first: agents get SIGTERM (a clean
	// shutdown stops PostgreSQL), then any postmaster still alive (an agent
	// killed by the test left it) is killed by the PID it wrote.
	t.Cleanup(c.stop)
	return c
}

func (c *cluster) stop() {
	if c.t.Failed() {
		// PostgreSQL's own log is a file beside the data directory: show
		// its end, or a failure inside PostgreSQL leaves no trace.
		for _, n := range c.nodes {
			if _, err := os.Stat(filepath.Join(n.dir, "data.log")); err == nil {
				c.t.Logf("%s: end of PostgreSQL's log:\n%s", n.name, harness.Tail(filepath.Join(n.dir, "data.log"), 6000))
			}
		}
	}
	for _, n := range c.nodes {
		if n.agent != nil && !n.agent.Exited() {
			_ = n.agent.Stop(syscall.SIGTERM, 30*time.Second)
		}
	}
	for _, n := range c.nodes {
		if pid := n.postmasterPID(); pid > 0 && syscall.Kill(pid, 0) == nil {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (n *node) writeConfig(priority int) {
	o := n.c.opts
	pgb := ""
	if o.pgbouncer {
		pgb = fmt.Sprintf(`pooler:
  pgbouncer:
    admin_dsn: "host=127.0.0.1 port=%d dbname=pgbouncer user=pgbouncer connect_timeout=2"
    databases_file: %s
    pause_timeout: 2
    databases:
      app: {dbname: postgres, target: primary}
      app_local: {dbname: postgres, target: local}
`, n.bouncerPortAlloc(), filepath.Join(n.dir, "pgbouncer-databases.ini"))
	}
	cfg := harness.NodeYAML{
		Name: n.name, Scope: o.scope, Endpoints: []string{n.etcdEndpoint()}, EtcdExtra: o.etcdExtra,
		RESTPort: n.apiPort, RESTExtra: n.restTLS() + o.restExtra,
		BinDir: n.binDir(), DataDir: filepath.Join(n.dir, "data"), SocketDir: n.dir, PGPort: n.pgPort,
		Superuser: o.superuser, Replication: o.replication, MaxConnections: 50,
		AfterParams: o.pgExtra + n.pgTLS(), Priority: &priority, LogLevel: "debug", Pooler: pgb,
		TTL: o.ttl, LoopWait: o.loopWait, Retry: o.retry, ClusterExtra: o.extra + "\n" + o.nodeExtra[n.index],
	}.Render()
	n.cfgPath = filepath.Join(n.dir, "pgwarden.yaml")
	if err := os.WriteFile(n.cfgPath, []byte(cfg), 0o600); err != nil {
		n.c.t.Fatal(err)
	}
}

func (n *node) etcdEndpoint() string {
	if ep, ok := n.c.etcdVia[n.index]; ok {
		return ep
	}
	return n.c.etcd.Endpoint
}

func (n *node) pgTLS() string {
	if !n.c.opts.pgTLS {
		return ""
	}
	return fmt.Sprintf("  tls: {cert: %s, key: %s, ca: %s}\n", n.pgCert, n.pgKey, n.c.ca.File)
}

func (n *node) restTLS() string {
	if !n.c.opts.tls {
		return ""
	}
	return fmt.Sprintf("  tls: {cert: %s, key: %s, ca: %s, client_ca: %s, verify_client: true}", n.cert, n.key, n.c.ca.File, n.c.ca.File)
}

// tlsClient trusts the cluster's CA and, withCert, presents a client
// certificate it signed.
func (c *cluster) tlsClient(timeout time.Duration, withCert bool) *http.Client {
	tc := &tls.Config{RootCAs: x509.NewCertPool()}
	pem, err := os.ReadFile(c.ca.File)
	must(c.t, err)
	tc.RootCAs.AppendCertsFromPEM(pem)
	if withCert {
		cert, key := c.ca.Issue(c.t, "tester", x509.ExtKeyUsageClientAuth)
		pair, err := tls.LoadX509KeyPair(cert, key)
		must(c.t, err)
		tc.Certificates = []tls.Certificate{pair}
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tc}}
}

func (n *node) binDir() string {
	if d := n.c.opts.binDir; d != "" {
		return d
	}
	return harness.PgBinDir(n.c.t)
}

func (n *node) bouncerPortAlloc() int {
	if n.bouncerPort == 0 {
		n.bouncerPort = harness.Port(n.c.t)
	}
	return n.bouncerPort
}

// start runs this node's agent.
func (n *node) start() {
	cmd := exec.Command(harness.Binary(n.c.t), "agent", "-c", n.cfgPath)
	if env := n.c.opts.env; len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout = &n.log
	n.agent = harness.Start(n.c.t, n.name, cmd)
}

// killHost is a power loss: kill -9 of the watchdog, the agent and the
// postmaster, so nothing is left to hand the leader key back.
func (n *node) killHost() {
	if pid := watchdog.HolderPID(n.dataDir()); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	n.killHard()
}

// killHard is the agent and its server dying on a living host: kill -9 of
// the agent and of the postmaster (the watchdog lives on).
func (n *node) killHard() {
	pid := n.postmasterPID()
	n.agent.Kill()
	if !n.agent.Wait(10 * time.Second) {
		n.c.t.Fatalf("%s agent did not die", n.name)
	}
	if pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (n *node) postmasterPID() int {
	pf, _ := pgproc.ReadPIDFile(n.dataDir())
	return pf.PID
}

func (n *node) api(path string) string {
	scheme := "http"
	if n.c.opts.tls {
		scheme = "https"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d%s", scheme, n.apiPort, path)
}

var httpc = &http.Client{Timeout: 2 * time.Second}

// probe returns the status code of GET path on this node's REST API (0 when
// it does not answer).
func (n *node) probe(path string) int {
	resp, err := n.c.hc.Get(n.api(path))
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// status is GET /patroni decoded loosely.
func (n *node) status() map[string]any {
	resp, err := n.c.hc.Get(n.api("/patroni"))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var v map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&v)
	return v
}

// dsn connects straight to this node's PostgreSQL (verifying it with
// opts.pgTLS, whose pg_hba takes no plain TCP).
func (n *node) dsn() string {
	ssl := "sslmode=disable"
	if n.c.opts.pgTLS {
		ssl = "sslmode=verify-full sslrootcert=" + n.c.ca.File
	}
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=%s dbname=postgres connect_timeout=2 %s", n.pgPort, n.c.opts.superPass, ssl)
}

func (n *node) connect(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, n.dsn()) }

// withConn runs f on a fresh connection to this node, within 5 s.
func (n *node) withConn(f func(ctx context.Context, conn *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := n.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return f(ctx, conn)
}

// exec runs one statement on this node.
func (n *node) exec(sql string, args ...any) error {
	return n.withConn(func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, sql, args...)
		return err
	})
}

// queryRow runs a query returning one row into dest.
func (n *node) queryRow(sql string, dest ...any) error {
	return n.withConn(func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, sql).Scan(dest...)
	})
}

// queryInt runs a query returning one integer.
func (n *node) queryInt(sql string) (int64, error) {
	var v int64
	err := n.queryRow(sql, &v)
	return v, err
}

// primary waits until exactly one node answers 200 on /primary and returns it.
func (c *cluster) primary(timeout time.Duration, except ...*node) *node {
	c.t.Helper()
	var found *node
	harness.WaitFor(c.t, timeout, "one primary", func() (bool, error) {
		found = nil
		count := 0
		for _, n := range c.nodes {
			if contains(except, n) {
				continue
			}
			if n.probe("/primary") == 200 {
				found = n
				count++
			}
		}
		if count > 1 {
			return false, fmt.Errorf("%d nodes answer /primary", count)
		}
		return found != nil, fmt.Errorf("no primary")
	})
	return found
}

func contains(ns []*node, n *node) bool {
	for _, x := range ns {
		if x == n {
			return true
		}
	}
	return false
}

// waitReplicas waits until every node but the primary streams.
func (c *cluster) waitReplicas(timeout time.Duration, primary *node, except ...*node) {
	c.t.Helper()
	harness.WaitFor(c.t, timeout, "replicas streaming", func() (bool, error) {
		for _, n := range c.nodes {
			if n == primary || contains(except, n) {
				continue
			}
			if code := n.probe("/replica"); code != 200 {
				return false, fmt.Errorf("%s /replica = %d", n.name, code)
			}
			// Streaming on the primary's timeline, not still from the
			// candidate before its promotion.
			if pt, rt := timelineOf(primary), timelineOf(n); pt == 0 || pt != rt {
				return false, fmt.Errorf("%s on timeline %d, primary on %d", n.name, rt, pt)
			}
		}
		return true, nil
	})
}

func timelineOf(n *node) int {
	if st := n.status(); st != nil {
		if v, ok := st["timeline"].(float64); ok {
			return int(v)
		}
	}
	return 0
}

// waitRows waits until every given node has at least want rows in t.
func waitRows(t testing.TB, timeout time.Duration, want int64, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		harness.WaitFor(t, timeout, n.name+" has the rows", func() (bool, error) {
			got, err := n.queryInt("SELECT count(*) FROM t")
			if err != nil {
				return false, err
			}
			return got >= want, fmt.Errorf("%s has %d rows, want %d", n.name, got, want)
		})
	}
}

// startBouncer runs a PgBouncer for this node; its agent manages the
// included databases file.
func (n *node) startBouncer() {
	t := n.c.t
	port := n.bouncerPortAlloc()
	var opts []func(*pgbouncerini.File)
	if n.c.opts.pgTLS {
		opts = append(opts, func(f *pgbouncerini.File) { f.ServerTLSMode, f.ServerTLSCAFile = "verify-full", n.c.ca.File })
	}
	n.bouncer = harness.StartPgBouncer(t, n.dir, port, "superpass", "", opts...).Proc
	harness.WaitFor(t, 10*time.Second, "pgbouncer listening", func() (bool, error) {
		conn, err := pgx.Connect(context.Background(), fmt.Sprintf("host=127.0.0.1 port=%d user=pgbouncer dbname=pgbouncer connect_timeout=1", port))
		if err != nil {
			return false, err
		}
		conn.Close(context.Background())
		return true, nil
	})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// pgwarden runs the CLI and fails the test unless it exits 0; it returns
// the standard output.
func pgwarden(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, code := runCLI(t, "", args...)
	if code != 0 {
		t.Fatalf("pgwarden %v: exit %d: %s%s", args, code, errOut, out)
	}
	return out
}

// runCLI runs the CLI with stdin and returns stdout, stderr and the exit code.
func runCLI(t testing.TB, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(harness.Binary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run pgwarden %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}
