//go:build integration

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// TestPostgresTLSStreamsAndFailsOver: with postgres.tls every TCP
// connection to PostgreSQL is TLS. The replicas stream over TLS (their
// walsenders' pg_stat_ssl rows), a plain TCP login is refused by the
// default pg_hba (hostssl), primary_conninfo verifies the primary against
// the CA, and a client through PgBouncer reaches the
// primary over a TLS server connection. After the primary's agent and
// postmaster are killed, the new primary's replica streams over TLS, the
// old primary rejoins (pg_rewind from the new one, over TLS) and streams,
// and PgBouncer's clients reach the new primary over TLS.
func TestPostgresTLSStreamsAndFailsOver(t *testing.T) {
	start := time.Now()
	c := newCluster(t, clusterOpts{nodes: 3, ttl: 5, pgbouncer: true, pgTLS: true})
	p := c.primary(90 * time.Second)
	c.waitReplicas(90*time.Second, p)
	waitTLSStreaming(t, p, 2)

	err := plainLogin(p)
	if err == nil || !strings.Contains(err.Error(), "no pg_hba.conf entry") || !strings.Contains(err.Error(), "no encryption") {
		t.Fatalf("plain TCP login to the primary: %v; want refused by pg_hba (hostssl)", err)
	}
	replica := c.other(p)
	// TLS alone would come from libpq's default (prefer): the replicas
	// verify the primary's certificate against the CA.
	var conninfo string
	must(t, replica.queryRow("SELECT current_setting('primary_conninfo')", &conninfo))
	if !strings.Contains(conninfo, "sslmode=verify-full") || !strings.Contains(conninfo, "sslrootcert='"+c.ca.File+"'") {
		t.Fatalf("%s primary_conninfo %q: want sslmode=verify-full against the CA", replica.name, conninfo)
	}
	assertBouncerReachesOverTLS(t, replica, p)
	t.Logf("streaming over TLS after %s", time.Since(start).Round(100*time.Millisecond))

	failAt := time.Now()
	p.killHard()
	q := c.primary(60*time.Second, p)
	waitTLSStreaming(t, q, 1)
	t.Logf("%s promoted, its replica streams over TLS %s after the kill", q.name, time.Since(failAt).Round(100*time.Millisecond))
	assertBouncerReachesOverTLS(t, c.other(q, p), q)

	p.start()
	waitTLSStreaming(t, q, 2)
	c.waitReplicas(60*time.Second, q)
	t.Logf("old primary %s rejoined over TLS; whole test %s", p.name, time.Since(start).Round(100*time.Millisecond))
}

// waitTLSStreaming waits until n has want streaming walsenders, every one
// of them (and every other TCP session) over TLS.
func waitTLSStreaming(t *testing.T, n *node, want int64) {
	t.Helper()
	harness.WaitFor(t, 60*time.Second, n.name+" streams to its replicas over TLS", func() (bool, error) {
		var streaming, tls, plainTCP int64
		err := n.queryRow(`SELECT
 (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'),
 (SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.state = 'streaming' AND s.ssl),
 (SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.client_addr IS NOT NULL AND NOT s.ssl)`,
			&streaming, &tls, &plainTCP)
		if err != nil {
			return false, err
		}
		if plainTCP > 0 {
			return false, fmt.Errorf("%d TCP sessions without TLS", plainTCP)
		}
		return streaming == want && tls == want, fmt.Errorf("%d walsenders streaming, %d of them over TLS; want %d", streaming, tls, want)
	})
}

// plainLogin is a login to n over TCP without TLS.
func plainLogin(n *node) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=superpass dbname=postgres sslmode=disable", n.pgPort))
	if err == nil {
		conn.Close(ctx)
	}
	return err
}

// assertBouncerReachesOverTLS: a client of via's PgBouncer ("app", target
// primary) lands on primary, and PgBouncer's server connection there is
// TLS.
func assertBouncerReachesOverTLS(t *testing.T, via, primary *node) {
	t.Helper()
	harness.WaitFor(t, 30*time.Second, via.name+"'s pgbouncer reaches "+primary.name+" over TLS", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=superpass dbname=app sslmode=disable default_query_exec_mode=simple_protocol", via.bouncerPort))
		if err != nil {
			return false, err
		}
		defer conn.Close(ctx)
		var port int
		var ssl, recovery bool
		if err := conn.QueryRow(ctx, "SELECT inet_server_port(), ssl, pg_is_in_recovery() FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&port, &ssl, &recovery); err != nil {
			return false, err
		}
		if port != primary.pgPort || recovery {
			return false, fmt.Errorf("reached port %d (in recovery %v), want %s's %d", port, recovery, primary.name, primary.pgPort)
		}
		if !ssl {
			t.Fatalf("%s's pgbouncer reaches %s without TLS", via.name, primary.name)
		}
		return true, nil
	})
}
