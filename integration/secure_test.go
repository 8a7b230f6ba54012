//go:build integration

package integration

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgwarden/pgwarden/integration/harness"
	"github.com/pgwarden/pgwarden/postgres"
	"github.com/pgwarden/pgwarden/rest/resttest"
)

// TestSecureEtcdAndSecrets runs one cluster as production runs it: etcd
// with client TLS, client certificates required and authentication on (the
// agents' user may read and write /pgwarden/ only), every password outside
// the YAML (password_file or the fixed PGWARDEN_*_PASSWORD variables), and
// PostgreSQL logging every statement. It checks:
//   - the roles hold SCRAM verifiers and the passwords work (the tests log
//     in, the replica streams);
//   - a kill -9 of the primary's agent and postmaster: its watchdog fences
//     and hands the leader key back over TLS with the credentials, so the
//     replica leads well before the lease could expire;
//   - a wrong CA, a missing client certificate or a wrong password make
//     `pgwarden agent` (and `pgwarden list`) exit at start with one line
//     naming the key, touching no data directory and no key;
//   - no secret appears in any log (agents, watchdogs, PostgreSQL, etcd),
//     etcd key or value, REST answer or CLI output.
func TestSecureEtcdAndSecrets(t *testing.T) {
	start := time.Now()
	dir := harness.Dir(t, "secure")
	pki := resttest.NewCA(t, dir, "etcd-ca")
	srvCert, srvKey := pki.Issue(t, "etcd-server", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	hCert, hKey := pki.Issue(t, "harness", x509.ExtKeyUsageClientAuth)
	// Not an etcd user's name: the password is what authenticates.
	agCert, agKey := pki.Issue(t, "pgwarden-agent", x509.ExtKeyUsageClientAuth)
	secrets := map[string]string{}
	for _, k := range []string{"etcd", "superuser", "replication", "rest", "etcd root"} {
		secrets[k] = randomSecret(t, k)
	}
	e := harness.StartEtcdSecure(t, harness.EtcdSecure{CA: pki.File, Cert: srvCert, Key: srvKey, ClientCert: hCert, ClientKey: hKey,
		User: "pgwarden", Password: secrets["etcd"], RootPassword: secrets["etcd root"], Prefix: "/pgwarden/"})
	root := e.RootClient(t)

	suFile := writeFile(t, dir, "superuser.pass", secrets["superuser"]+"\n")
	restFile := writeFile(t, dir, "rest.pass", secrets["rest"]+"\n")
	etcdFile := writeFile(t, dir, "etcd.pass", secrets["etcd"]+"\n")
	// The members' etcd password comes from the environment (which the
	// watchdog's hand-back inherits), the refused agents' below from files.
	tlsFiles := fmt.Sprintf("  tls: {ca: %s, cert: %s, key: %s}", pki.File, agCert, agKey)
	etcdSection := "  username: pgwarden\n" + tlsFiles
	replEnv := "PGWARDEN_POSTGRES_REPLICATION_PASSWORD=" + secrets["replication"]
	const ttl = 10
	c := newCluster(t, clusterOpts{nodes: 2, ttl: ttl, retry: 2, etcd: e, etcdExtra: etcdSection,
		superuser: "password_file: " + suFile, replication: "-", superPass: secrets["superuser"],
		restExtra: "  auth: {username: admin, password_file: " + restFile + "}",
		env:       []string{replEnv, "PGWARDEN_ETCD_PASSWORD=" + secrets["etcd"]},
		pgExtra:   "    log_statement: all\n"})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	t.Logf("bootstrapped on etcd with TLS and auth in %.1fs: primary %s", time.Since(start).Seconds(), p.name)

	// The passwords are stored as SCRAM verifiers, and work: the test
	// logs in with the superuser's, the replica streams with the
	// replication user's.
	for _, role := range []string{"postgres", "replicator"} {
		var v string
		must(t, p.queryRow("SELECT rolpassword FROM pg_authid WHERE rolname = '"+role+"'", &v))
		if !strings.HasPrefix(v, "SCRAM-SHA-256$4096:") {
			t.Fatalf("role %s: rolpassword %.20q..., want a SCRAM-SHA-256 verifier", role, v)
		}
	}
	// A non-ASCII password: the verifier computed here is the one libpq
	// (SASLprep) logs in with.
	probePass := "p\u00e4ss\u00a0w\u2168rd\u00ad-" + randomSecret(t, "probe")
	v, err := postgres.SCRAMVerifier(probePass)
	must(t, err)
	must(t, p.exec("CREATE ROLE probe LOGIN PASSWORD '"+v+"'"))
	psql := exec.Command(filepath.Join(harness.PgBinDir(t), "psql"), "-X", "-tA", "-w", "-c", "SELECT current_user",
		fmt.Sprintf("host=127.0.0.1 port=%d user=probe dbname=postgres sslmode=disable", p.pgPort))
	psql.Env = append(os.Environ(), "PGPASSWORD="+probePass)
	if out, err := psql.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "probe" {
		t.Fatalf("psql as probe with its non-ASCII password: %v: %s", err, out)
	}
	must(t, p.exec("CREATE TABLE t (id int)"))
	must(t, p.exec("INSERT INTO t SELECT generate_series(1, 10)"))

	secrets["probe role"] = probePass
	places := newLeakScan(secrets)
	for _, n := range c.nodes {
		places.rest(t, n)
		// The agent keeps the variables from what it starts: a role with
		// pg_read_server_files could read the postmaster's environment.
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", n.postmasterPID()))
		if err != nil || len(env) == 0 {
			t.Fatalf("%s: read the postmaster's environment: %v (%d bytes)", n.name, err, len(env))
		}
		places.add(n.name+" postmaster's environment", string(env))
		// The data directory goes into every base backup: primary_conninfo
		// names a pgpass file beside it instead of holding the password.
		conf, err := os.ReadFile(filepath.Join(n.dir, "data", "pgwarden.conf"))
		must(t, err)
		places.add(n.name+" data directory's pgwarden.conf", string(conf))
	}
	// The agent and its watchdog hold the variables, and the kernel keeps
	// the environment a process started with whatever it unsets: read as
	// PostgreSQL's OS user (a superuser's pg_read_binary_file, what a role
	// with pg_read_server_files can do), their /proc/PID/environ refuses.
	for _, n := range c.nodes {
		for _, proc := range []struct {
			what string
			pid  int
		}{{"agent", n.agent.PID()}, {"watchdog", watchdogOf(n.agent.PID())}} {
			if proc.pid == 0 {
				t.Fatalf("%s: its watchdog process not found", n.name)
			}
			var b []byte
			err := p.queryRow(fmt.Sprintf("SELECT pg_read_binary_file('/proc/%d/environ')", proc.pid), &b)
			if err == nil {
				places.add(n.name+" "+proc.what+"'s environment read through PostgreSQL", string(b))
				t.Errorf("%s: PostgreSQL read the %s's /proc/%d/environ (%d bytes)", n.name, proc.what, proc.pid, len(b))
			} else if !strings.Contains(err.Error(), "ermission denied") {
				t.Errorf("%s: reading the %s's environment through PostgreSQL: %v; want permission denied", n.name, proc.what, err)
			}
		}
	}

	// Bad etcd settings, each in a node's file otherwise like node1's but
	// of another scope: one line naming the key, exit 1, nothing touched.
	wrongCA := resttest.NewCA(t, harness.Dir(t, "wrong-pki"), "wrong-ca")
	wrongPass := writeFile(t, dir, "wrong.pass", "not-the-password\n")
	base, err := os.ReadFile(c.nodes[0].cfgPath)
	must(t, err)
	bad := []struct{ name, etcd, key, namespace string }{
		{"wrong CA", fmt.Sprintf("  username: pgwarden\n  password_file: %s\n  tls: {ca: %s, cert: %s, key: %s}", etcdFile, wrongCA.File, agCert, agKey), "etcd.tls.ca: ", ""},
		{"no client certificate", fmt.Sprintf("  username: pgwarden\n  password_file: %s\n  tls: {ca: %s}", etcdFile, pki.File), "etcd.tls.cert: ", ""},
		{"wrong password", "  username: pgwarden\n  password_file: " + wrongPass + "\n" + tlsFiles, "etcd.username/etcd.password: ", ""},
		{"no credentials", tlsFiles, "etcd.username/etcd.password: ", ""},
		{"namespace beyond the role", "  username: pgwarden\n  password_file: " + etcdFile + "\n" + tlsFiles, `etcd.username: etcd at 127.0.0.1:`, "/other"},
	}
	for i, b := range bad {
		cfg := strings.Replace(string(base), etcdSection, b.etcd, 1)
		cfg = strings.Replace(cfg, "scope: test", "scope: bad", 1)
		if b.namespace != "" {
			cfg = strings.Replace(cfg, "namespace: /pgwarden", "namespace: "+b.namespace, 1)
		}
		dataDir := filepath.Join(dir, fmt.Sprintf("bad%d", i), "data")
		cfg = strings.Replace(cfg, filepath.Join(c.nodes[0].dir, "data"), dataDir, 1)
		cfg = strings.Replace(cfg, fmt.Sprintf("127.0.0.1:%d", c.nodes[0].apiPort), fmt.Sprintf("127.0.0.1:%d", harness.Port(t)), 1)
		cfg = strings.Replace(cfg, fmt.Sprintf("127.0.0.1:%d", c.nodes[0].pgPort), fmt.Sprintf("127.0.0.1:%d", harness.Port(t)), 1)
		path := writeFile(t, dir, fmt.Sprintf("bad%d.yaml", i), cfg)
		for _, cmd := range []string{"agent", "list"} {
			took := time.Now()
			out, code := runBounded(t, 30*time.Second, []string{replEnv}, cmd, "-c", path)
			places.add(fmt.Sprintf("pgwarden %s output (%s)", cmd, b.name), out)
			line := strings.TrimSpace(out)
			if code == 0 || strings.Contains(line, "\n") || !strings.Contains(line, b.key) {
				t.Fatalf("%s: pgwarden %s: exit %d, output %q; want exit 1 and one line naming %s", b.name, cmd, code, out, strings.TrimSuffix(b.key, ": "))
			}
			t.Logf("%s: pgwarden %s exits %d in %.2fs: %s", b.name, cmd, code, time.Since(took).Seconds(), line)
		}
		if _, err := os.Stat(filepath.Dir(dataDir)); !os.IsNotExist(err) {
			t.Fatalf("%s: the refused agent touched %s (%v)", b.name, filepath.Dir(dataDir), err)
		}
		if keys := append(etcdKeys(t, root, "/pgwarden/bad/"), etcdKeys(t, root, "/other/")...); len(keys) != 0 {
			t.Fatalf("%s: the refused agent wrote %v", b.name, keys)
		}
	}

	// kill -9 of the primary's agent and postmaster: its watchdog fences
	// and hands the key back (`pgwarden handback`, over TLS with the
	// credentials of the file and the environment it inherited).
	_, mark := p.log.Since(0)
	taken := watchKeyTaken(t, root, "/pgwarden/test/leader", p.name)
	killed := time.Now()
	p.killHard()
	var took time.Duration
	select {
	case at := <-taken:
		took = at.Sub(killed)
	case <-time.After(2 * ttl * time.Second):
		t.Fatalf("no member took the leader key within %ds of the kill", 2*ttl)
	}
	np := c.primary(2*ttl*time.Second, p)
	t.Logf("%s took the leader key %.2fs after kill -9 of %s's agent and postmaster, primary %.1fs after (ttl %d)",
		np.name, took.Seconds(), p.name, time.Since(killed).Seconds(), ttl)
	harness.WaitFor(t, 10*time.Second, p.name+"'s watchdog handing the key back", func() (bool, error) {
		l, _ := p.log.Since(mark)
		return strings.Contains(l, "leader key handed back"), fmt.Errorf("no hand-back in %s's log", p.name)
	})
	// The lease outlives the kill by ttl minus at most a loop: a key
	// taken before ttl/2 was handed back.
	if took > ttl/2*time.Second {
		t.Fatalf("the key was taken %.1fs after the kill: not handed back (ttl %d)", took.Seconds(), ttl)
	}
	if n, err := np.queryInt("SELECT count(*) FROM t"); err != nil || n != 10 {
		t.Fatalf("new primary has %d rows (%v), want 10", n, err)
	}
	places.rest(t, np)

	// The statement log holds the role's DDL, with a verifier: the scan
	// below is of a log that would show a plaintext password.
	pgLog, err := os.ReadFile(filepath.Join(p.dir, "data.log"))
	must(t, err)
	if !strings.Contains(string(pgLog), `WITH REPLICATION LOGIN PASSWORD 'SCRAM-SHA-256$4096:`) {
		t.Errorf("%s's PostgreSQL log has no CREATE ROLE with a verifier: log_statement = all not in effect?", p.name)
	}
	out, code := runBounded(t, 30*time.Second, c.opts.env, "list", "-c", np.cfgPath)
	if code != 0 || !strings.Contains(out, np.name) {
		t.Fatalf("pgwarden list over etcd with TLS and auth: exit %d: %s", code, out)
	}
	places.add("pgwarden list output", out)
	for _, n := range c.nodes {
		l, _ := n.log.Since(0)
		places.add(n.name+" agent and watchdog log", l)
		for _, f := range []string{"data.log", "data/log"} {
			places.files(t, n.name+" PostgreSQL log", filepath.Join(n.dir, f))
		}
	}
	places.add("etcd's log", e.Output())
	kvs, err := root.Get(context.Background(), "", clientv3.WithPrefix())
	must(t, err)
	var kv strings.Builder
	for _, x := range kvs.Kvs {
		fmt.Fprintf(&kv, "%s=%s\n", x.Key, x.Value)
	}
	places.add(fmt.Sprintf("every etcd key and value (%d keys)", len(kvs.Kvs)), kv.String())
	places.check(t)
	t.Logf("whole test: %.1fs", time.Since(start).Seconds())
}

// watchKeyTaken reports when a member other than old puts key, as etcd's
// watch sees it.
func watchKeyTaken(t *testing.T, cli *clientv3.Client, key, old string) <-chan time.Time {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	taken := make(chan time.Time, 1)
	wch := cli.Watch(ctx, key)
	go func() {
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypePut && string(ev.Kv.Value) != old {
					taken <- time.Now()
					return
				}
			}
		}
	}()
	// The watch is established before this returns: a read through the
	// same client orders after it.
	_, err := cli.Get(ctx, key)
	must(t, err)
	return taken
}

func randomSecret(t *testing.T, what string) string {
	b := make([]byte, 12)
	_, err := rand.Read(b)
	must(t, err)
	return strings.ReplaceAll(what, " ", "-") + "-" + hex.EncodeToString(b)
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	must(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

// runBounded runs the CLI with env added, killing it past d; it returns
// its output (stdout and stderr) and exit code.
func runBounded(t *testing.T, d time.Duration, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("pgwarden %v still running after %s: %s", args, d, out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run pgwarden %v: %v", args, err)
	}
	return string(out), code
}

func etcdKeys(t *testing.T, cli *clientv3.Client, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	must(t, err)
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// leakScan is every place searched for the secrets, with what it held.
type leakScan struct {
	secrets map[string]string
	places  map[string]string
}

func newLeakScan(secrets map[string]string) *leakScan {
	return &leakScan{secrets: secrets, places: map[string]string{}}
}

func (l *leakScan) add(place, content string) { l.places[place] += content }

// files adds every file at path (a file, or the files of a directory).
func (l *leakScan) files(t *testing.T, place, path string) {
	_ = filepath.Walk(path, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			b, rerr := os.ReadFile(p)
			must(t, rerr)
			l.add(place+" "+p, string(b))
		}
		return nil
	})
}

// rest adds the answers of n's REST API that anyone may read.
func (l *leakScan) rest(t *testing.T, n *node) {
	for _, path := range []string{"/", "/patroni", "/cluster", "/config", "/history", "/metrics"} {
		resp, err := n.c.hc.Get(n.api(path))
		must(t, err)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		must(t, err)
		l.add(fmt.Sprintf("REST GET %s on %s", path, n.name), string(b))
	}
}

// check fails for each place holding a secret, and lists the places.
func (l *leakScan) check(t *testing.T) {
	names := make([]string, 0, len(l.places))
	for p := range l.places {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		for what, s := range l.secrets {
			if strings.Contains(l.places[p], s) {
				t.Errorf("the %s password appears in %s", what, p)
			}
		}
		t.Logf("searched %s (%d bytes)", p, len(l.places[p]))
	}
	t.Logf("searched %d places for %d secrets", len(names), len(l.secrets))
}
