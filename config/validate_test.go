package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// base is a valid configuration; each bad case replaces one line of it.
func base(t *testing.T) string {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "pg_ctl"), nil, 0o755)
	return fmt.Sprintf(`name: node1
scope: main
etcd:
  endpoints: [127.0.0.1:2379, "http://10.0.0.2:2379"]
rest:
  listen: 127.0.0.1:8008
postgres:
  bin_dir: %[1]s
  data_dir: %[2]s/data
  listen: 127.0.0.1:5432
  superuser: {username: postgres, password: a}
  replication: {username: replicator, password: b}
  parameters: {work_mem: 64MB}
priority: 100
pooler:
  pgbouncer:
    admin_dsn: "host=127.0.0.1 port=6432 dbname=pgbouncer"
    databases_file: %[2]s/pgwarden.ini
    databases:
      app: {dbname: app, target: primary}
      app_ro: {dbname: app, target: local}
hooks:
  events: [promote, demote]
cluster:
  ttl: 10
  loop_wait: 1
  retry_timeout: 3
`, bin, dir)
}

func parse(s string) (*Config, error) { return Parse(strings.NewReader(s)) }

func TestValidConfig(t *testing.T) {
	c, err := parse(base(t))
	if err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	if c.REST.ConnectAddress != "127.0.0.1:8008" || c.Postgres.ConnectAddress != "127.0.0.1:5432" ||
		c.Cluster.TTL.D() != 10*time.Second || c.Prefix() != "/pgwarden/main/" || !*c.Postgres.UseSlots {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestBadConfigs(t *testing.T) {
	cases := []struct {
		name, from, to string
		want           []string // substrings of the error: key, value, rule
	}{
		{"missing name", "name: node1", "name: ''", []string{"name:", "required"}},
		{"bad name", "name: node1", "name: 'node 1'", []string{"name:", `"node 1"`, "letters"}},
		{"unknown key", "priority: 100", "priorty: 100", []string{"priorty", "not found"}},
		{"wrong type", "priority: 100", "priority: high", []string{"high", "int"}},
		{"negative priority", "priority: 100", "priority: -1", []string{"priority", "-1", ">= 0"}},
		{"bad port", "  listen: 127.0.0.1:5432", "  listen: 127.0.0.1:99999", []string{"postgres.listen", `"127.0.0.1:99999"`, "port must be 1-65535"}},
		{"no port", "  listen: 127.0.0.1:8008", "  listen: localhost", []string{"rest.listen", `"localhost"`, "host:port"}},
		{"bad etcd endpoint", "endpoints: [127.0.0.1:2379,", "endpoints: [http//x,", []string{"etcd.endpoints[0]", "http//x"}},
		{"etcd endpoint with path", "endpoints: [127.0.0.1:2379,", "endpoints: [http://h:2379/v3,", []string{"etcd.endpoints[0]", "want host:port"}},
		{"relative data_dir", "data_dir: ", "data_dir: data #", []string{"postgres.data_dir", "absolute"}},
		{"bad duration", "ttl: 10", "ttl: 10x", []string{"line", "10x", "duration"}},
		{"negative duration", "ttl: 10", "ttl: -5", []string{"-5", "negative"}},
		{"ttl too small", "ttl: 10", "ttl: 4", []string{"cluster.ttl", "4s", "ttl too small for loop_wait and retry_timeout"}},
		{"socket path too long", "parameters: {work_mem: 64MB}", "parameters: {unix_socket_directories: '/run/pg, /tmp/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'}", []string{"postgres.parameters.unix_socket_directories", "/tmp/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "/.s.PGSQL.5432 is 114 bytes; Unix sockets allow 107"}},
		{"zero loop_wait", "loop_wait: 1", "loop_wait: 0", []string{"cluster.loop_wait", "must be > 0"}},
		{"duplicate pooler db", "app_ro: {dbname: app, target: local}", "APP: {dbname: app, target: local}", []string{"pooler.pgbouncer.databases", "duplicate pooler database name"}},
		{"bad pooler target", "app_ro: {dbname: app, target: local}", "app_ro: {dbname: app, target: replica}", []string{"databases.app_ro.target", `"replica"`, "primary or local"}},
		{"databases_file dir missing", "databases_file: ", "databases_file: /nonexistent/dir/x.ini #", []string{"databases_file", "directory does not exist"}},
		{"unknown hook event", "events: [promote, demote]", "events: [promote, explode]", []string{"hooks.events[1]", `"explode"`, "unknown event"}},
		{"bad log level", "priority: 100", "priority: 100\nlog: {level: loud}", []string{"log.level", `"loud"`}},
		{"bad log format", "priority: 100", "priority: 100\nlog: {format: xml}", []string{"log.format", `"xml"`}},
		{"managed parameter", "parameters: {work_mem: 64MB}", "parameters: {port: '5433'}", []string{"postgres.parameters.port", "managed by pgwarden"}},
		{"missing replication password", "replication: {username: replicator, password: b}", "replication: {username: replicator}", []string{"postgres.replication.password", "required"}},
		{"same superuser and replication user", "replication: {username: replicator, password: b}", "replication: {username: postgres, password: b}", []string{"postgres.replication.username", "must differ"}},
		{"no pg_ctl", "  bin_dir: ", "  bin_dir: /nonexistent #", []string{"postgres.bin_dir", "pg_ctl"}},
		{"zero clone timeout", "  parameters: {work_mem: 64MB}", "  parameters: {work_mem: 64MB}\n  clone_timeout: 0", []string{"postgres.clone_timeout", "must be > 0"}},
		{"zero rewind timeout", "  parameters: {work_mem: 64MB}", "  parameters: {work_mem: 64MB}\n  rewind_timeout: 0s", []string{"postgres.rewind_timeout", "must be > 0"}},
		{"bad watchdog mode", "priority: 100", "priority: 100\nwatchdog: {mode: maybe}", []string{"watchdog.mode", `"maybe"`}},
		{"safety margin above ttl", "priority: 100", "priority: 100\nwatchdog: {safety_margin: 30}", []string{"watchdog.safety_margin", "below cluster.ttl"}},
		{"rest auth half set", "  listen: 127.0.0.1:8008", "  listen: 127.0.0.1:8008\n  auth: {username: op}", []string{"rest.auth", "both required"}},
		{"rest tls file missing", "  listen: 127.0.0.1:8008", "  listen: 127.0.0.1:8008\n  tls: {cert: /nonexistent.pem, key: /nonexistent.key}", []string{"rest.tls.cert", "cannot read"}},
	}
	good := base(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(good, c.from) {
				t.Fatalf("test bug: base lacks %q", c.from)
			}
			_, err := parse(strings.Replace(good, c.from, c.to, 1))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestEveryProblemAtOnce(t *testing.T) {
	s := strings.Replace(base(t), "name: node1", "name: ''", 1)
	s = strings.Replace(s, "listen: 127.0.0.1:5432", "listen: 127.0.0.1:0", 1)
	s = strings.Replace(s, "ttl: 10", "ttl: 4", 1)
	_, err := parse(s)
	var p Problems
	if err == nil || !asProblems(err, &p) || len(p) != 4 {
		t.Fatalf("want 4 problems at once (connect_address inherits the bad listen), got %v", err)
	}
}

func asProblems(err error, p *Problems) bool {
	x, ok := err.(Problems)
	*p = x
	return ok
}

func TestParseDynamic(t *testing.T) {
	d, err := ParseDynamic([]byte(`{"ttl":20,"loop_wait":"500ms","pause":true}`))
	if err != nil || d.TTL.D() != 20*time.Second || d.LoopWait.D() != 500*time.Millisecond || !d.Pause || d.RetryTimeout.D() != 3*time.Second {
		t.Fatalf("ParseDynamic = %+v, %v", d, err)
	}
	for bad, want := range map[string]string{
		`{"ttl":2}`:                      "ttl too small",
		`{"tll":20}`:                     "unknown field",
		`{"ttl":"soon"}`:                 "soon",
		`{"loop_wait":-1}`:               "negative",
		`{"maximum_lag_on_failover":-1}`: "maximum_lag_on_failover",
		`[`:                              "dynamic configuration",
	} {
		if _, err := ParseDynamic([]byte(bad)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDynamic(%s) = %v; want error containing %q", bad, err, want)
		}
	}
}

// The examples a newcomer copies are valid (bin_dir and directories
// checked only where they exist on this machine).
func TestExamplesParse(t *testing.T) {
	for i := 1; i <= 3; i++ {
		path := filepath.Join("..", "examples", fmt.Sprintf("node%d.yaml", i))
		c, err := Load(path)
		if err != nil {
			if _, statErr := os.Stat("/usr/lib/postgresql/15/bin/pg_ctl"); statErr != nil && strings.Contains(err.Error(), "bin_dir") && !strings.Contains(err.Error(), "\n") {
				continue
			}
			t.Fatalf("%s: %v", path, err)
		}
		if c.Name != fmt.Sprintf("node%d", i) {
			t.Fatalf("%s: name %q", path, c.Name)
		}
	}
}

// The examples agree with each other: pgbouncer.ini %includes (last) the
// file the node configs have the agent write, and its socket directory is
// the nodes' unix_socket_directories; haproxy.cfg checks every node's REST
// port and has a stats listener.
func TestExamplesAgree(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	ini := read("pgbouncer.ini")
	lines := strings.Split(strings.TrimSpace(ini), "\n")
	include, ok := strings.CutPrefix(lines[len(lines)-1], "%include ")
	if !ok {
		t.Fatalf("pgbouncer.ini does not end with %%include: %q", lines[len(lines)-1])
	}
	haproxy := read("haproxy.cfg")
	for i := 1; i <= 3; i++ {
		node := read(fmt.Sprintf("node%d.yaml", i))
		if !strings.Contains(node, "databases_file: "+include+"\n") {
			t.Errorf("node%d.yaml does not write %s, the file pgbouncer.ini includes", i, include)
		}
		var sock string
		for _, l := range strings.Split(node, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "unix_socket_directories: "); ok {
				sock = v
			}
		}
		if sock == "" || !strings.Contains(ini, "\nunix_socket_dir = "+sock+"\n") {
			t.Errorf("node%d.yaml's unix_socket_directories %q is not pgbouncer.ini's unix_socket_dir", i, sock)
		}
		c, err := Parse(strings.NewReader(node))
		if err != nil {
			continue // TestExamplesParse reports it
		}
		_, port, _ := strings.Cut(c.REST.Listen, ":")
		if strings.Count(haproxy, "check port "+port+"\n") != 2 {
			t.Errorf("haproxy.cfg does not check node%d's REST port %s in both listeners", i, port)
		}
	}
	if !strings.Contains(haproxy, "stats enable") {
		t.Error("haproxy.cfg has no stats listener")
	}
}

// A live ttl change is checked against this node's watchdog.safety_margin:
// the watchdog strikes at ttl minus the margin after each renewal, and
// renewals come every loop_wait.
func TestCheckMargin(t *testing.T) {
	d := DefaultDynamic()
	d.LoopWait = Duration(time.Second)
	for _, c := range []struct {
		ttl, margin time.Duration
		ok          bool
	}{
		{8 * time.Second, 2 * time.Second, true},
		{4 * time.Second, 2 * time.Second, true},
		{3 * time.Second, 2 * time.Second, false},
		{2 * time.Second, 2 * time.Second, false},
	} {
		d.TTL = Duration(c.ttl)
		err := d.CheckMargin(c.margin)
		if (err == nil) != c.ok {
			t.Fatalf("ttl %s, margin %s: %v; want ok=%v", c.ttl, c.margin, err, c.ok)
		}
		if err != nil {
			for _, w := range []string{"ttl: " + c.ttl.String(), "watchdog.safety_margin (" + c.margin.String() + ")", "safety_margin + loop_wait (3s)"} {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q lacks %q", err, w)
				}
			}
		}
	}
}

// TestDynamicBadValuesNameTheKey: a value refused in PATCH /config or
// edit-config names its key, and a number of seconds too large for a
// duration (or not a number) is refused instead of wrapping around.
func TestDynamicBadValuesNameTheKey(t *testing.T) {
	cases := []struct{ raw, want string }{
		{`{"ttl":"abc"}`, "ttl"},
		{`{"ttl":-5}`, "ttl"},
		{`{"ttl":true}`, "ttl"},
		{`{"loop_wait":"NaN"}`, "loop_wait"},
		{`{"ttl":"Inf"}`, "ttl"},
		{`{"ttl":1e10}`, "ttl"},
		{`{"ttl":9100000000}`, "ttl"},
		{`{"ttl":3601}`, "at most 1h0m0s"},
		{`{"ttl":10,"retry_timeout":"x"}`, "retry_timeout"},
	}
	for _, c := range cases {
		_, err := ParseDynamic([]byte(c.raw))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error naming %q", c.raw, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "-2562047h") {
			t.Errorf("%s: the duration wrapped around: %v", c.raw, err)
		}
	}
	if _, err := ParseDynamic([]byte(`{"ttl":3600,"loop_wait":10,"retry_timeout":10}`)); err != nil {
		t.Errorf("ttl at the bound refused: %v", err)
	}
}
