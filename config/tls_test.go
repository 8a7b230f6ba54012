package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgwarden/pgwarden/rest/resttest"
)

// TestTLSPeersConfigRefusedAtStart: every file rest.tls names is loaded by
// Validate, so what would leave peers and the CLI unable to read a member
// (a missing or non-PEM CA, a key of another certificate, a certificate
// that does not name rest.connect_address) is refused at start, all at
// once, naming the key, the value and the rule.
func TestTLSPeersConfigRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	ca := resttest.NewCA(t, dir, "ca")
	cert, key := ca.Issue(t, "node1")
	_, otherKey := ca.Issue(t, "node2")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsLine := func(fields string) string { return "  listen: 127.0.0.1:8008\n  tls: {" + fields + "}" }
	good := "cert: " + cert + ", key: " + key + ", ca: " + ca.File + ", client_ca: " + ca.File + ", verify_client: true"

	c, err := parse(strings.Replace(base(t), "  listen: 127.0.0.1:8008", tlsLine(good), 1))
	if err != nil {
		t.Fatalf("valid rest.tls refused: %v", err)
	}
	if tc := c.REST.TLS; tc.CA != ca.File || tc.ClientCA != ca.File || !tc.VerifyClient {
		t.Fatalf("rest.tls = %+v", tc)
	}

	cases := []struct {
		name, fields string
		want         []string
	}{
		{"ca missing", "cert: " + cert + ", key: " + key + ", ca: /nonexistent/ca.pem",
			[]string{`rest.tls.ca: "/nonexistent/ca.pem": `, "no such file"}},
		{"ca not PEM", "cert: " + cert + ", key: " + key + ", ca: " + garbage,
			[]string{"rest.tls.ca: " + `"` + garbage + `"`, "no PEM certificate in it"}},
		{"ca is a key", "cert: " + cert + ", key: " + key + ", ca: " + key,
			[]string{"rest.tls.ca: ", "no PEM certificate in it"}},
		{"client_ca not PEM", "cert: " + cert + ", key: " + key + ", client_ca: " + garbage,
			[]string{"rest.tls.client_ca: ", "no PEM certificate in it"}},
		{"cert not PEM", "cert: " + garbage + ", key: " + key,
			[]string{"rest.tls.cert: " + `"` + garbage + `"`, "no PEM certificate in it"}},
		{"key missing", "cert: " + cert + ", key: /nonexistent/k.key",
			[]string{`rest.tls.key: "/nonexistent/k.key": cannot read it`}},
		{"key of another certificate", "cert: " + cert + ", key: " + otherKey,
			[]string{"rest.tls.key: " + `"` + otherKey + `"`, "not the key of rest.tls.cert", "does not match"}},
		{"no key", "cert: " + cert,
			[]string{"rest.tls.key", "required"}},
		{"verify_client without client_ca", "cert: " + cert + ", key: " + key + ", verify_client: true",
			[]string{"rest.tls.client_ca", "required with verify_client"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse(strings.Replace(base(t), "  listen: 127.0.0.1:8008", tlsLine(tc.fields), 1))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q lacks %q", err, w)
				}
			}
		})
	}

	t.Run("certificate not for connect_address", func(t *testing.T) {
		s := strings.Replace(base(t), "  listen: 127.0.0.1:8008", tlsLine(good)+"\n  connect_address: 10.0.0.9:8008", 1)
		_, err := parse(s)
		if err == nil || !strings.Contains(err.Error(), "rest.tls.cert") || !strings.Contains(err.Error(), "not valid for rest.connect_address host 10.0.0.9") {
			t.Fatalf("error %v: want rest.tls.cert not valid for 10.0.0.9", err)
		}
	})
	t.Run("every problem at once", func(t *testing.T) {
		s := strings.Replace(base(t), "  listen: 127.0.0.1:8008", tlsLine("cert: "+garbage+", key: "+key+", ca: "+garbage+", verify_client: true"), 1)
		_, err := parse(s)
		var p Problems
		if err == nil || !asProblems(err, &p) || len(p) != 3 {
			t.Fatalf("want 3 problems (cert, ca, client_ca), got %v", err)
		}
	})
}
