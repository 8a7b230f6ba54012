package config

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/rest/resttest"
)

// TestPostgresTLSRefusedAtStart: what would keep PostgreSQL from starting
// (a key others can read) or replicas, probes and the pooler from
// connecting with verify-full (bad PEM, an expired certificate, one another
// CA signed, one that does not name the host they dial) is refused by
// Validate, naming the postgres.tls key, before anything is touched.
func TestPostgresTLSRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	ca := resttest.NewCA(t, dir, "ca")
	other := resttest.NewCA(t, t.TempDir(), "other-ca")
	cert, key := ca.Issue(t, "pg")
	_, otherKey := ca.Issue(t, "pg2")
	expired, expiredKey := ca.IssueLeaf(t, "old", resttest.Leaf{NotAfter: time.Now().Add(-time.Minute)})
	elsewhere, elsewhereKey := ca.IssueLeaf(t, "elsewhere", resttest.Leaf{IPs: []net.IP{net.IPv4(10, 0, 0, 9)}})
	foreign, foreignKey := other.Issue(t, "foreign")
	open := filepath.Join(dir, "open.key")
	b, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(open, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withTLS := func(t *testing.T, fields string) string {
		return strings.Replace(base(t), "  listen: 127.0.0.1:5432\n", "  listen: 127.0.0.1:5432\n  tls: {"+fields+"}\n", 1)
	}

	c, err := parse(withTLS(t, "cert: "+cert+", key: "+key+", ca: "+ca.File))
	if err != nil {
		t.Fatalf("valid postgres.tls refused: %v", err)
	}
	if tc := c.Postgres.TLS; tc == nil || tc.CA != ca.File || SSLMode(tc) != "verify-full" {
		t.Fatalf("postgres.tls = %+v", tc)
	}
	// Without a CA nothing is verified, so a certificate for another host
	// is accepted (sslmode=require).
	if c, err := parse(withTLS(t, "cert: "+elsewhere+", key: "+elsewhereKey)); err != nil || SSLMode(c.Postgres.TLS) != "require" {
		t.Fatalf("postgres.tls without ca: %v", err)
	}

	cases := []struct {
		name, fields string
		want         []string
	}{
		{"key missing", "cert: " + cert + ", key: /nonexistent/pg.key",
			[]string{`postgres.tls.key: "/nonexistent/pg.key": cannot read it`, "no such file"}},
		{"key readable by others", "cert: " + cert + ", key: " + open + ", ca: " + ca.File,
			[]string{`postgres.tls.key: "` + open + `": mode 0644`}},
		{"cert not PEM", "cert: " + garbage + ", key: " + key,
			[]string{`postgres.tls.cert: "` + garbage + `": no PEM certificate in it`}},
		{"ca not PEM", "cert: " + cert + ", key: " + key + ", ca: " + garbage,
			[]string{`postgres.tls.ca: "` + garbage + `": no PEM certificate in it`}},
		{"key of another certificate", "cert: " + cert + ", key: " + otherKey,
			[]string{"postgres.tls.key: ", "not the key of postgres.tls.cert"}},
		{"expired", "cert: " + expired + ", key: " + expiredKey + ", ca: " + ca.File,
			[]string{`postgres.tls.cert: "` + expired + `": expired on `}},
		{"signed by another CA", "cert: " + foreign + ", key: " + foreignKey + ", ca: " + ca.File,
			[]string{`postgres.tls.cert: "` + foreign + `": not signed by postgres.tls.ca ` + ca.File}},
		{"not for connect_address", "cert: " + elsewhere + ", key: " + elsewhereKey + ", ca: " + ca.File,
			[]string{"postgres.tls.cert: ", "not valid for postgres.connect_address host 127.0.0.1"}},
		{"no key", "cert: " + cert, []string{"postgres.tls.key: ", "required with postgres.tls"}},
		{"relative path", "cert: " + cert + ", key: pg.key", []string{`postgres.tls.key: "pg.key": must be an absolute path`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(withTLS(t, tc.fields))
			var p Problems
			if err == nil || !asProblems(err, &p) {
				t.Fatalf("accepted or not Problems: %v", err)
			}
			if len(p) != 1 {
				t.Fatalf("want one problem, got %d: %v", len(p), err)
			}
			for _, w := range tc.want {
				if !strings.Contains(p[0], w) {
					t.Fatalf("error %q lacks %q", p[0], w)
				}
			}
		})
	}
	t.Run("ssl parameters beside postgres.tls", func(t *testing.T) {
		s := strings.Replace(withTLS(t, "cert: "+cert+", key: "+key), "{work_mem: 64MB}", "{work_mem: 64MB, ssl: \"off\"}", 1)
		_, err := parse(s)
		if err == nil || !strings.Contains(err.Error(), `postgres.parameters.ssl: "off": set by postgres.tls`) {
			t.Fatalf("error %v: want postgres.parameters.ssl refused", err)
		}
	})
}
