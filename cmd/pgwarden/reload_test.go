package main

import (
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/config"
)

// TestReloadClassifies: each key a SIGHUP may meet, changed alone, is
// reported by its file name and classed as live, refused or read only at
// initialization; secrets never carry their values.
func TestReloadClassifies(t *testing.T) {
	base := func() *config.Config {
		c := config.Defaults()
		c.Name, c.Postgres.DataDir = "node1", "/var/lib/pgwarden/node1"
		c.REST.Auth = &config.Credential{Username: "admin", Password: "old-secret"}
		c.REST.TLS = &config.ServerTLS{Cert: "/etc/c.pem", Key: "/etc/k.pem"}
		c.Pooler.PgBouncer = &config.PgBouncer{AdminDSN: "host=x", DatabasesFile: "/f.ini",
			Databases: map[string]config.PoolerDB{"app": {DBName: "app", Target: "primary"}}}
		c.Backup = &config.Backup{Repository: "/r", Schedule: map[string]string{"full": "0 1 * * 0"}}
		return &c
	}
	for _, tc := range []struct {
		key    string
		class  reloadClass
		change func(c *config.Config)
	}{
		{"log.level", reloadLive, func(c *config.Config) { c.Log.Level = "debug" }},
		{"priority", reloadLive, func(c *config.Config) { p := 0; c.Priority = &p }},
		{"tags.nofailover", reloadLive, func(c *config.Config) { c.Tags.NoFailover = true }},
		{"tags.noloadbalance", reloadLive, func(c *config.Config) { c.Tags.NoLoadBalance = true }},
		{"tags.replicatefrom", reloadLive, func(c *config.Config) { c.Tags.ReplicateFrom = "node2" }},
		{"tags.dc", reloadLive, func(c *config.Config) { c.Tags.Extra = map[string]string{"dc": "b"} }},
		{"rest.auth.username", reloadLive, func(c *config.Config) { c.REST.Auth.Username = "root" }},
		{"rest.auth.password", reloadLive, func(c *config.Config) { c.REST.Auth.Password = "new-secret" }},
		{"rest.auth", reloadLive, func(c *config.Config) { c.REST.Auth = nil }},
		{"rest.tls.cert", reloadLive, func(c *config.Config) { c.REST.TLS.Cert = "/etc/c2.pem" }},
		{"rest.tls.key", reloadLive, func(c *config.Config) { c.REST.TLS.Key = "/etc/k2.pem" }},
		{"rest.tls.ca", reloadLive, func(c *config.Config) { c.REST.TLS.CA = "/etc/ca.pem" }},
		{"rest.tls.client_ca", reloadLive, func(c *config.Config) { c.REST.TLS.ClientCA = "/etc/cca.pem" }},
		{"rest.tls.verify_client", reloadLive, func(c *config.Config) { c.REST.TLS.VerifyClient = true }},
		{"pooler.pgbouncer.databases.app.target", reloadLive, func(c *config.Config) {
			c.Pooler.PgBouncer.Databases = map[string]config.PoolerDB{"app": {DBName: "app", Target: "local"}}
		}},
		{"pooler.pgbouncer.databases.ro", reloadLive, func(c *config.Config) {
			c.Pooler.PgBouncer.Databases = map[string]config.PoolerDB{"app": {DBName: "app", Target: "primary"}, "ro": {DBName: "app", Target: "local"}}
		}},
		{"hooks.event_command", reloadLive, func(c *config.Config) { c.Hooks.EventCommand = "notify %e" }},
		{"hooks.events", reloadLive, func(c *config.Config) { c.Hooks.Events = []string{"promote"} }},
		{"hooks.timeout", reloadLive, func(c *config.Config) { c.Hooks.Timeout = config.Duration(5 * time.Second) }},
		{"backup.schedule.diff", reloadLive, func(c *config.Config) {
			c.Backup.Schedule = map[string]string{"full": "0 1 * * 0", "diff": "0 1 * * 1-6"}
		}},
		{"cluster.ttl", reloadInit, func(c *config.Config) { c.Cluster.TTL = config.Duration(5 * time.Second) }},
		{"bootstrap.method", reloadInit, func(c *config.Config) { c.Bootstrap.Method = "backup" }},
		{"name", reloadRefused, func(c *config.Config) { c.Name = "node9" }},
		{"scope", reloadRefused, func(c *config.Config) { c.Scope = "other" }},
		{"namespace", reloadRefused, func(c *config.Config) { c.Namespace = "/x" }},
		{"postgres.data_dir", reloadRefused, func(c *config.Config) { c.Postgres.DataDir = "/elsewhere" }},
		{"postgres.listen", reloadRefused, func(c *config.Config) { c.Postgres.Listen = "127.0.0.1:6543" }},
		{"postgres.connect_address", reloadRefused, func(c *config.Config) { c.Postgres.ConnectAddress = "10.0.0.1:5432" }},
		{"postgres.bin_dir", reloadRefused, func(c *config.Config) { c.Postgres.BinDir = "/opt/pg/bin" }},
		{"postgres.superuser.password", reloadRefused, func(c *config.Config) { c.Postgres.Superuser.Password = "x" }},
		{"postgres.parameters.work_mem", reloadRefused, func(c *config.Config) { c.Postgres.Parameters = map[string]string{"work_mem": "64MB"} }},
		{"rest.listen", reloadRefused, func(c *config.Config) { c.REST.Listen = "127.0.0.1:9999" }},
		{"rest.connect_address", reloadRefused, func(c *config.Config) { c.REST.ConnectAddress = "10.0.0.1:8008" }},
		{"rest.tls", reloadRefused, func(c *config.Config) { c.REST.TLS = nil }},
		{"rest.metrics_compat", reloadRefused, func(c *config.Config) { c.REST.MetricsCompat = "patroni" }},
		{"etcd.endpoints", reloadRefused, func(c *config.Config) { c.Etcd.Endpoints = []string{"10.0.0.1:2379"} }},
		{"etcd.password", reloadRefused, func(c *config.Config) { c.Etcd.Password = "x" }},
		{"pooler.pgbouncer.admin_dsn", reloadRefused, func(c *config.Config) { c.Pooler.PgBouncer.AdminDSN = "host=y" }},
		{"pooler.pgbouncer", reloadRefused, func(c *config.Config) { c.Pooler.PgBouncer = nil }},
		{"backup.repository", reloadRefused, func(c *config.Config) { c.Backup.Repository = "/r2" }},
		{"backup", reloadRefused, func(c *config.Config) { c.Backup = nil }},
		{"watchdog.mode", reloadRefused, func(c *config.Config) { c.Watchdog.Mode = "off" }},
		{"log.format", reloadRefused, func(c *config.Config) { c.Log.Format = "json" }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			next := base()
			tc.change(next)
			changes := config.Diff(base(), next)
			if len(changes) != 1 || changes[0].Key != tc.key {
				t.Fatalf("Diff = %+v; want one change, of %s", changes, tc.key)
			}
			if got := classify(tc.key); got != tc.class {
				t.Fatalf("classify(%s) = %d, want %d", tc.key, got, tc.class)
			}
			c := changes[0]
			if strings.Contains(tc.key, "password") && (!c.Secret || c.Old != "" || c.New != "") {
				t.Fatalf("a password's change carries its values: %+v", c)
			}
		})
	}
	if d := config.Diff(base(), base()); len(d) != 0 {
		t.Fatalf("Diff of equal configurations = %+v", d)
	}
	// An empty and a missing list or map are the same file.
	a, b := base(), base()
	a.Hooks.Events, b.Hooks.Events = nil, []string{}
	a.Tags.Extra, b.Tags.Extra = nil, map[string]string{}
	if d := config.Diff(a, b); len(d) != 0 {
		t.Fatalf("Diff of empty vs missing = %+v", d)
	}
}
