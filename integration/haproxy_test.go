//go:build integration

package integration

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/integration/harness"
	"github.com/pgwarden/pgwarden/rest/resttest"
)

// TestHAProxyFollowsPrimary: HAProxy configured as for Patroni (OPTIONS
// /primary, expect 200) routes to the primary, and to the new one after a
// switchover; the replica listener reaches only replicas. The members'
// APIs speak TLS with verify_client, as a production API should: HAProxy
// checks them with check-ssl, verifying their certificates against the
// cluster's CA and presenting a client certificate the same CA signed.
// (The checks' HTTP is the same over plain HTTP; one cluster tests both.)
func TestHAProxyFollowsPrimary(t *testing.T) {
	c := newCluster(t, clusterOpts{ttl: 10, retry: 3, tls: true})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	rw, ro := harness.Port(t), harness.Port(t)
	// HAProxy's crt is the certificate and its key in one file.
	cert, key := c.ca.Issue(t, "haproxy", x509.ExtKeyUsageClientAuth)
	pair := filepath.Join(harness.Dir(t, "haproxy-pki"), "haproxy.pem")
	certPEM, err := os.ReadFile(cert)
	must(t, err)
	keyPEM, err := os.ReadFile(key)
	must(t, err)
	must(t, os.WriteFile(pair, append(certPEM, keyPEM...), 0o600))
	// The control: the same checks against another CA must find no server.
	wrongCA := resttest.NewCA(t, harness.Dir(t, "wrong-pki"), "wrong-ca").File
	var servers, unverified strings.Builder
	for _, n := range c.nodes {
		fmt.Fprintf(&servers, "    server %s 127.0.0.1:%d check port %d check-ssl verify required ca-file %s crt %s\n",
			n.name, n.pgPort, n.apiPort, c.ca.File, pair)
		fmt.Fprintf(&unverified, "    server %s 127.0.0.1:%d check port %d check-ssl verify required ca-file %s crt %s\n",
			n.name, n.pgPort, n.apiPort, wrongCA, pair)
	}
	wrong := harness.Port(t)
	cfg := fmt.Sprintf(`global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 1m
    timeout server 1m
    timeout check 2s
listen primary
    bind 127.0.0.1:%d
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
%s
listen replicas
    bind 127.0.0.1:%d
    balance roundrobin
    option httpchk OPTIONS /replica?lag=16MB
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
%s
listen wrong_ca
    bind 127.0.0.1:%d
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
%s`, rw, servers.String(), ro, servers.String(), wrong, unverified.String())
	path := filepath.Join(harness.Dir(t, "haproxy"), "haproxy.cfg")
	must(t, os.WriteFile(path, []byte(cfg), 0o600))
	harness.Start(t, "haproxy", exec.Command(harness.LookPath(t, "haproxy", "haproxy"), "-db", "-f", path))

	// recovery says whether the server behind port is a standby, and which.
	recovery := func(port int) (bool, int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=superpass dbname=postgres connect_timeout=2 sslmode=disable", port))
		if err != nil {
			return false, 0, err
		}
		defer conn.Close(ctx)
		var rec bool
		var sp int
		err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), inet_server_port()").Scan(&rec, &sp)
		return rec, sp, err
	}
	harness.WaitFor(t, 15*time.Second, "haproxy routes writes to the primary", func() (bool, error) {
		rec, port, err := recovery(rw)
		return err == nil && !rec && port == p.pgPort, fmt.Errorf("recovery=%v port=%d err=%v", rec, port, err)
	})
	harness.WaitFor(t, 15*time.Second, "the listener whose checks trust another CA reaches no server", func() (bool, error) {
		_, port, err := recovery(wrong)
		return err != nil, fmt.Errorf("reached port %d", port)
	})
	// HAProxy starts with every server up; once its checks have run, the
	// replica listener reaches standbys only (several in a row).
	harness.WaitFor(t, 15*time.Second, "replica listener reaches only standbys", func() (bool, error) {
		for range 4 {
			if rec, _, err := recovery(ro); err != nil || !rec {
				return false, fmt.Errorf("recovery=%v err=%v", rec, err)
			}
		}
		return true, nil
	})
	var cand *node
	for _, n := range c.nodes {
		if n != p {
			cand = n
			break
		}
	}
	if code, body := p.post("POST", "/switchover", fmt.Sprintf(`{"candidate":%q}`, cand.name)); code != 200 {
		t.Fatalf("switchover: %d %s", code, body)
	}
	start := time.Now()
	harness.WaitFor(t, 15*time.Second, "haproxy routes writes to the new primary", func() (bool, error) {
		rec, port, err := recovery(rw)
		return err == nil && !rec && port == cand.pgPort, fmt.Errorf("recovery=%v port=%d err=%v", rec, port, err)
	})
	t.Logf("haproxy routes to the new primary %s after %s", cand.name, time.Since(start).Round(100*time.Millisecond))
}
