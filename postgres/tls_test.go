package postgres

import (
	"slices"
	"strings"
	"testing"

	"github.com/pgwarden/pgwarden/rest/resttest"
)

// TestTLSRendering: with TLS the server gets ssl on with the files, the
// default pg_hba admits TCP only over TLS, and every client side
// (primary_conninfo, pg_basebackup and pg_rewind's environment, the agent's
// own connections) verifies the server against the CA and the host it
// dials; without TLS nothing changes.
func TestTLSRendering(t *testing.T) {
	ca := resttest.NewCA(t, t.TempDir(), "ca") // pgx reads the CA as it parses a connection string
	tlsCfg := &TLS{CertFile: "/etc/pg/it's.pem", KeyFile: "/etc/pg/node.key", CAFile: ca.File, SSLMode: "verify-full", ServerName: "10.0.0.2"}
	s := New(Config{Listen: "0.0.0.0:5433", ReplUser: "rep", ReplPassword: "pw", AppName: "node2", TLS: tlsCfg}, nil)
	conf, err := s.renderConf(&Upstream{Host: "10.0.0.1", Port: 5432})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ssl = on\n", "ssl_cert_file = '/etc/pg/it''s.pem'\n", "ssl_key_file = '/etc/pg/node.key'\n", "ssl_ca_file = '" + ca.File + "'\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("conf lacks %q:\n%s", want, conf)
		}
	}
	ci := s.conninfo(Upstream{Host: "10.0.0.1", Port: 5432})
	fields := splitConninfo(ci)
	for _, want := range []string{"sslmode=verify-full", "sslrootcert=" + ca.File, "host=10.0.0.1"} {
		if !slices.Contains(fields, want) {
			t.Errorf("primary_conninfo %q lacks %q", ci, want)
		}
	}
	if slices.Contains(fields, "sslmode=prefer") {
		t.Errorf("primary_conninfo %q still prefers", ci)
	}
	hba := s.renderHBA()
	if !strings.Contains(hba, "hostssl all all samenet scram-sha-256\n") || !strings.Contains(hba, "hostssl replication rep samenet scram-sha-256\n") ||
		strings.Contains(hba, "\nhost ") {
		t.Errorf("pg_hba with TLS:\n%s", hba)
	}
	if env := tlsCfg.env(); !slices.Equal(env, []string{"PGSSLMODE=verify-full", "PGSSLROOTCERT=" + ca.File}) {
		t.Errorf("libpq environment = %q", env)
	}

	// The agent's own connection dials Listen but verifies the
	// connect_address host; a probe of a peer verifies the peer's host.
	cc, err := s.connConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cc.TLSConfig == nil || cc.TLSConfig.InsecureSkipVerify || cc.TLSConfig.ServerName != "10.0.0.2" || cc.TLSConfig.RootCAs == nil {
		t.Fatalf("own connection TLS = %+v", cc.TLSConfig)
	}
	if len(cc.Fallbacks) != 0 {
		t.Fatalf("own connection falls back: %+v", cc.Fallbacks)
	}
	pc, err := s.dialConfig("10.0.0.7", 5432)
	if err != nil {
		t.Fatal(err)
	}
	if pc.TLSConfig == nil || pc.TLSConfig.ServerName != "10.0.0.7" {
		t.Fatalf("probe TLS = %+v", pc.TLSConfig)
	}
	// Only a certificate and key: encrypted, not verified.
	req := &TLS{CertFile: "/c", KeyFile: "/k", SSLMode: "require"}
	if kw := req.Keywords(); kw != "sslmode=require" {
		t.Errorf("keywords without a CA = %q", kw)
	}
	if c := req.conf(); strings.Contains(c, "ssl_ca_file") || !strings.Contains(c, "ssl = on") {
		t.Errorf("conf without a CA = %q", c)
	}

	plain := New(Config{Listen: "127.0.0.1:5433", ReplUser: "rep"}, nil)
	conf, _ = plain.renderConf(nil)
	if strings.Contains(conf, "ssl") {
		t.Errorf("conf without TLS mentions ssl:\n%s", conf)
	}
	if hba := plain.renderHBA(); strings.Contains(hba, "hostssl") {
		t.Errorf("pg_hba without TLS:\n%s", hba)
	}
	if !slices.Contains(splitConninfo(plain.conninfo(Upstream{Host: "h", Port: 1})), "sslmode=prefer") {
		t.Error("primary_conninfo without TLS does not prefer TLS")
	}
	if cc, err := plain.connConfig(); err != nil || cc.TLSConfig != nil || (*TLS)(nil).env() != nil {
		t.Errorf("own connection without TLS: %+v, %v", cc, err)
	}
}
