//go:build integration

package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/integration/harness"
)

// TestSIGHUPReload: SIGHUP re-reads a running agent's file. Tags,
// priority, the log level and the REST password change live: /patroni,
// the health checks' tag filter and the member record in etcd show the new
// tags and priority, the new password is required and the old one refused,
// a database added to the pooler is served by PgBouncer at once, and the
// log names each key without a password in it. A changed scope
// refuses the whole reload in one line naming it, as a file that is not
// YAML does; the agent keeps running on what it had. A REST certificate
// rotated on disk under the same names is served to new connections.
func TestSIGHUPReload(t *testing.T) {
	start := time.Now()
	c := newCluster(t, clusterOpts{nodes: 2, ttl: 5, retry: 2, tls: true, pgbouncer: true,
		restExtra: "\n  auth: {username: admin, password: old-pass}"})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	r := c.nodes[0]
	if r == p {
		r = c.nodes[1]
	}
	t.Logf("cluster up in %.1fs: primary %s, replica %s", time.Since(start).Seconds(), p.name, r.name)
	if code := r.probe("/replica?tag_dc=b"); code != 503 {
		t.Fatalf("/replica?tag_dc=b before the reload: %d, want 503", code)
	}
	if code := r.postAs("old-pass"); code != 200 {
		t.Fatalf("POST /reload with the configured password: %d, want 200", code)
	}
	orig, err := os.ReadFile(r.cfgPath)
	must(t, err)

	// Tags, priority, log level, REST password, a pooler database.
	const localDB = "      app_local: {dbname: postgres, target: local}\n"
	if !strings.Contains(string(orig), localDB) {
		t.Fatalf("the node's file has no %q to add a database after:\n%s", localDB, orig)
	}
	edited := strings.NewReplacer("password: old-pass", "password: new-pass", "priority: 100", "priority: 40",
		"level: debug", "level: info", localDB, localDB+"      reports: {dbname: postgres, target: primary}\n").Replace(string(orig)) +
		"tags: {nofailover: true, dc: b}\n"
	_, mark := r.log.Since(0)
	r.sighup(edited)
	harness.WaitFor(t, 10*time.Second, "the replica's /patroni and member record show the new tags and priority", func() (bool, error) {
		st := r.status()
		tags, _ := st["tags"].(map[string]any)
		m := c.member(t, r.name)
		ok := tags["nofailover"] == "true" && tags["dc"] == "b" && st["priority"] == float64(40) &&
			m.Priority == 40 && m.NoFailover && m.Tags["dc"] == "b"
		return ok, fmt.Errorf("/patroni tags %v priority %v; member record priority %d nofailover %v tags %v", tags, st["priority"], m.Priority, m.NoFailover, m.Tags)
	})
	if code := r.probe("/replica?tag_dc=b"); code != 200 {
		t.Fatalf("/replica?tag_dc=b after the reload: %d, want 200", code)
	}
	if code := r.postAs("old-pass"); code != 401 {
		t.Fatalf("POST /reload with the old password after the reload: %d, want 401", code)
	}
	if code := r.postAs("new-pass"); code != 200 {
		t.Fatalf("POST /reload with the new password: %d, want 200", code)
	}
	// The added database is served by the replica's PgBouncer, pointed at
	// the leader.
	harness.WaitFor(t, 10*time.Second, "the replica's pgbouncer serves the added database at the primary", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=superpass dbname=reports sslmode=disable default_query_exec_mode=simple_protocol", r.bouncerPort))
		if err != nil {
			return false, err
		}
		defer conn.Close(ctx)
		var port int
		err = conn.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port)
		return err == nil && port == p.pgPort, fmt.Errorf("port %d, want %d: %v", port, p.pgPort, err)
	})
	logged, mark := r.log.Since(mark)
	for _, key := range []string{"tags.nofailover", "tags.dc", "priority", "log.level", "rest.auth.password", "pooler.pgbouncer.databases.reports"} {
		if !hasLine(logged, "SIGHUP: applied", "key="+key+" ") {
			t.Errorf("no log line applying %s; the agent logged:\n%s", key, logged)
		}
	}
	if strings.Contains(logged, "old-pass") || strings.Contains(logged, "new-pass") {
		t.Errorf("the reload logged a password:\n%s", logged)
	}

	// A key that cannot change live: nothing applied, one line naming it.
	r.sighup(strings.Replace(edited, "scope: test", "scope: other", 1))
	refused := r.waitLog(t, mark, "SIGHUP: configuration not reloaded")
	if !hasLine(refused, "SIGHUP: configuration not reloaded", "key=scope") || strings.Count(refused, "SIGHUP:") != 1 {
		t.Fatalf("a scope change: want one line refusing it, naming scope; the agent logged:\n%s", refused)
	}
	_, mark = r.log.Since(0)
	// Not YAML: refused with the parser's error.
	r.sighup("name: [\n")
	bad := r.waitLog(t, mark, "SIGHUP: configuration not reloaded")
	if !strings.Contains(bad, "parse yaml") {
		t.Fatalf("a broken file: want the YAML error; the agent logged:\n%s", bad)
	}
	if r.agent.Exited() {
		t.Fatal("the agent exited on a refused reload")
	}
	st := r.status()
	if info, _ := st["patroni"].(map[string]any); st["priority"] != float64(40) || info["scope"] != "test" {
		t.Fatalf("after refused reloads /patroni shows priority %v, patroni %v; want the running 40 and scope test", st["priority"], info)
	}
	if code := r.postAs("new-pass"); code != 200 {
		t.Fatalf("POST /reload with the running password after refused reloads: %d, want 200", code)
	}

	// The certificate rotated on disk, same file names, then SIGHUP.
	before := r.servedSerial(t)
	c.ca.Issue(t, r.name)
	want := fileSerial(t, r.cert)
	if want == before {
		t.Fatalf("the reissued certificate has the old serial %s", before)
	}
	_, mark = r.log.Since(0)
	r.sighup(edited)
	r.waitLog(t, mark, "SIGHUP: rest.tls certificate reloaded")
	if got := r.servedSerial(t); got != want {
		t.Fatalf("a new connection after SIGHUP is served serial %s, want the rotated %s (was %s)", got, want, before)
	}
	// Its peer still reads it (verify_client: the rotated certificate is
	// also its client certificate, from the same CA).
	if code := r.probe("/patroni"); code != 200 {
		t.Fatalf("/patroni over TLS after the rotation: %d", code)
	}
	t.Logf("TestSIGHUPReload took %.1fs", time.Since(start).Seconds())
}

// hasLine says whether one line of log holds every one of parts.
func hasLine(log string, parts ...string) bool {
	for _, l := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l+" ", p)
		}
		if all {
			return true
		}
	}
	return false
}

// sighup writes the node's file and sends its agent SIGHUP.
func (n *node) sighup(content string) {
	must(n.c.t, os.WriteFile(n.cfgPath, []byte(content), 0o600))
	must(n.c.t, n.agent.Signal(syscall.SIGHUP))
}

// waitLog waits for a line containing s in the agent's log after offset
// and returns the log from offset on.
func (n *node) waitLog(t *testing.T, offset int, s string) string {
	t.Helper()
	var out string
	harness.WaitFor(t, 10*time.Second, "the agent logs "+s, func() (bool, error) {
		out, _ = n.log.Since(offset)
		return strings.Contains(out, s), fmt.Errorf("log since the change:\n%s", out)
	})
	return out
}

// postAs sends POST /reload (PostgreSQL re-reads its files: harmless) as
// admin with password and returns the status code.
func (n *node) postAs(password string) int {
	req, err := http.NewRequest(http.MethodPost, n.api("/reload"), nil)
	must(n.c.t, err)
	req.SetBasicAuth("admin", password)
	resp, err := n.c.hc.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// member is a member record as etcd holds it.
func (c *cluster) member(t *testing.T, name string) dcs.Member {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.etcd.Endpoint}, DialTimeout: 2 * time.Second})
	must(t, err)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/pgwarden/"+c.opts.scope+"/members/"+name)
	var m dcs.Member
	if err == nil && len(resp.Kvs) == 1 {
		_ = json.Unmarshal(resp.Kvs[0].Value, &m)
	}
	return m
}

// servedSerial is the serial of the certificate a new TLS connection to
// the node's API is served.
func (n *node) servedSerial(t *testing.T) string {
	tc := n.c.hc.Transport.(*http.Transport).TLSClientConfig.Clone()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", n.apiPort), tc)
	must(t, err)
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
}

func fileSerial(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	must(t, err)
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	must(t, err)
	return cert.SerialNumber.Text(16)
}
