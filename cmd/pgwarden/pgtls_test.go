package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/rest/resttest"
)

// TestAgentRefusesBadPostgresTLS: an agent whose postgres.tls key others
// can read (PostgreSQL would refuse to start with it) exits at once with
// one line naming postgres.tls.key, before it creates the data directory
// or contacts anyone.
func TestAgentRefusesBadPostgresTLS(t *testing.T) {
	dir := t.TempDir()
	ca := resttest.NewCA(t, dir, "ca")
	cert, key := ca.Issue(t, "pg")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "pg_ctl"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	path := filepath.Join(dir, "node.yaml")
	yaml := fmt.Sprintf(`name: node1
postgres:
  bin_dir: %s
  data_dir: %s
  superuser: {password: a}
  replication: {password: b}
  tls: {cert: %s, key: %s, ca: %s}
`, bin, data, cert, key, ca.File)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	// Bounded: were the file accepted, the agent would run until this ends.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(&env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, ctx: ctx}, []string{"agent", "-c", path})
	if code != 1 || strings.Count(errOut.String(), "\n") != 1 || !strings.Contains(errOut.String(), `postgres.tls.key: "`+key+`": mode 0644`) {
		t.Fatalf("agent with a world-readable postgres.tls.key: exit %d, stderr %q", code, errOut.String())
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Fatalf("data directory touched: %v", err)
	}
}

// TestPoolerLocalUnderVerifyFull: a "local" pooler entry dials listen, but
// under verify-full a wildcard listen names no certificate, so it dials
// connect_address, which validation made the certificate name.
func TestPoolerLocalUnderVerifyFull(t *testing.T) {
	cfg := &config.Config{Postgres: config.Postgres{Listen: "0.0.0.0:5432", ConnectAddress: "10.0.0.2:5432"}}
	if got := poolerLocal(cfg); got != "0.0.0.0:5432" {
		t.Errorf("without TLS: %s", got)
	}
	cfg.Postgres.TLS = &config.TLS{Cert: "/c", Key: "/k"}
	if got := poolerLocal(cfg); got != "0.0.0.0:5432" {
		t.Errorf("require (nothing verified): %s", got)
	}
	cfg.Postgres.TLS.CA = "/ca"
	if got := poolerLocal(cfg); got != "10.0.0.2:5432" {
		t.Errorf("verify-full, wildcard listen: %s; want connect_address", got)
	}
	cfg.Postgres.Listen = "10.0.0.2:5432"
	if got := poolerLocal(cfg); got != "10.0.0.2:5432" {
		t.Errorf("verify-full, listen on the address: %s", got)
	}
	cfg.Postgres.Listen = "127.0.0.1:5432"
	if got := poolerLocal(cfg); got != "127.0.0.1:5432" {
		t.Errorf("verify-full, loopback listen (validated to be named): %s", got)
	}
}
