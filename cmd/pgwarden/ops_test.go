package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/postgres"
)

// cascade is sampleCluster with node3 streaming from node1 (as its WAL
// senders say) and a node4 that nobody streams to, tagged to follow node3.
func cascade() *dcs.Cluster {
	c := sampleCluster()
	c.Members = append(c.Members, dcs.Member{Name: "node4", ConnURL: "postgres://[::1]:5435/postgres", Role: "replica", State: "running",
		Timeline: 3, Priority: 100, Tags: map[string]string{"replicatefrom": "node3"}})
	return c
}

func TestTopologyGolden(t *testing.T) {
	c := cascade()
	v := buildList(c, "main", false)
	var b bytes.Buffer
	if err := writeTopology(&b, v, buildTopology(v, map[string]string{"node1": "node2", "node3": "node1"})); err != nil {
		t.Fatal(err)
	}
	golden(t, "topology.txt", b.Bytes())
}

// TestTopologyCycle: replicatefrom tags that form a cycle still show each
// member once.
func TestTopologyCycle(t *testing.T) {
	c := cascade()
	c.Leader = nil
	c.Members[0].Tags = map[string]string{"replicatefrom": "node4"}
	c.Members[3].Tags = map[string]string{"replicatefrom": "node1"}
	v := buildList(c, "main", false)
	rows := buildTopology(v, nil)
	seen := map[string]int{}
	for _, r := range rows {
		seen[r.Member]++
	}
	if len(rows) != 4 || seen["node1"] != 1 || seen["node4"] != 1 {
		t.Fatalf("rows %+v", rows)
	}
}

func TestDSNAndPick(t *testing.T) {
	c := cascade()
	for _, tc := range []struct{ name, role, want string }{
		{"", "leader", "host=127.0.0.1 port=5433"},
		{"", "replica", "host=127.0.0.1 port=5432"},
		{"node4", "", "host=::1 port=5435"},
	} {
		m, err := pickMember(c, tc.name, tc.role)
		if err != nil || memberDSN(m) != tc.want {
			t.Errorf("pick %q/%q: %v, %v; want %s", tc.name, tc.role, m, err, tc.want)
		}
	}
	if _, err := pickMember(c, "node9", ""); err == nil || !strings.Contains(err.Error(), "node9") {
		t.Errorf("unknown member: %v", err)
	}
	if _, err := pickMember(c, "", "witness"); err == nil || !strings.Contains(err.Error(), "witness") {
		t.Errorf("bad role: %v", err)
	}
}

func TestQueryTableGolden(t *testing.T) {
	var b bytes.Buffer
	res := postgres.QueryResult{Columns: []string{"name", "setting"}, Rows: [][]string{{"max_connections", "50"}, {"wal_level", "replica"}}, Tag: "SELECT 2"}
	if err := writeQueryTable(&b, res); err != nil {
		t.Fatal(err)
	}
	b.WriteString("--\n")
	if err := writeQueryTable(&b, postgres.QueryResult{Tag: "CREATE TABLE"}); err != nil {
		t.Fatal(err)
	}
	golden(t, "query.txt", b.Bytes())
}

// runCmd runs one command line as main does and returns stdout, stderr and
// the exit status.
func runCmd(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(&env{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errOut, ctx: context.Background()}, args)
	return out.String(), errOut.String(), code
}

// TestCLIPapercuts: --help prints the usage once; a bad flag is one line
// with the hint; a missing -c names $PGWARDEN_CONFIG.
func TestCLIPapercuts(t *testing.T) {
	out, _, code := runCmd(t, "", "list", "--help")
	if code != 0 || strings.Count(out, "usage: pgwarden list") != 1 {
		t.Fatalf("list --help: exit %d, usage printed %d times:\n%s", code, strings.Count(out, "usage: pgwarden list"), out)
	}
	out, errOut, code := runCmd(t, "", "list", "--bogus")
	if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 ||
		!strings.Contains(errOut, "-bogus") || !strings.Contains(errOut, "pgwarden list --help") {
		t.Fatalf("bad flag: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Setenv(configEnv, "")
	if _, errOut, code := runCmd(t, "", "topology"); code != 2 || !strings.Contains(errOut, "$PGWARDEN_CONFIG") {
		t.Fatalf("no -c: exit %d, %q", code, errOut)
	}
}

// TestCheckConfig: a node file, a control-only file (for a laptop: no
// name, no passwords, -c from $PGWARDEN_CONFIG) and a bad file.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	control := filepath.Join(dir, "control.yaml")
	write := func(path, body string) {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(control, "scope: main\netcd: {endpoints: [127.0.0.1:2379]}\nrest: {auth: {username: op, password: pw}}\n")
	t.Setenv(configEnv, control)
	out, errOut, code := runCmd(t, "", "check-config")
	if code != 0 || !strings.Contains(out, "valid control-only configuration (scope main") {
		t.Fatalf("control file: exit %d %s %s", code, out, errOut)
	}
	bad := filepath.Join(dir, "bad.yaml")
	write(bad, "scope: main\netcd: {endpoints: [127.0.0.1:99999]}\nrest: {auth: {username: op}}\n")
	_, errOut, code = runCmd(t, "", "check-config", "-c", bad)
	if code != 1 || !strings.Contains(errOut, "etcd.endpoints[0]") || !strings.Contains(errOut, "rest.auth") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("bad file: exit %d %q", code, errOut)
	}
	node := filepath.Join(dir, "node.yaml")
	write(node, "name: node1\nscope: main\npostgres: {data_dir: /tmp/x, superuser: {password: a}, replication: {password: b}}\n")
	if out, errOut, code := runCmd(t, "", "check-config", "-c", node); code != 0 || !strings.Contains(out, "valid configuration of member node1 in scope main") {
		t.Fatalf("node file: exit %d %q %q", code, out, errOut)
	}
	// A node's file without its passwords is not an agent's file.
	write(node, "name: node1\nscope: main\npostgres: {data_dir: /tmp/x}\n")
	if _, errOut, code := runCmd(t, "", "check-config", "-c", node); code != 1 || !strings.Contains(errOut, "postgres.superuser.password") {
		t.Fatalf("node file without passwords: exit %d %q", code, errOut)
	}
}

// TestDocsFromCommandTable: the bash and zsh completion and the man page
// name every command an operator types, and each command's flags.
func TestDocsFromCommandTable(t *testing.T) {
	var bash, zsh, man bytes.Buffer
	writeBashCompletion(&bash)
	writeZshCompletion(&zsh)
	writeManPage(&man)
	for _, c := range visibleCommands() {
		if !strings.Contains(bash.String(), "\t"+c.name+") opts=") || !strings.Contains(zsh.String(), "'"+c.name+":") ||
			!strings.Contains(man.String(), `\fB`+roff(c.name)+`\fR`) {
			t.Errorf("%s missing from the completion or the man page", c.name)
		}
	}
	if !strings.Contains(bash.String(), `restart) opts="-c --pending --scheduled --force --ca --cert --key --help"`) {
		t.Errorf("restart's flags in bash completion:\n%s", bash.String())
	}
	if strings.Contains(bash.String(), "watchdog") || strings.Contains(man.String(), "handback") {
		t.Errorf("hidden commands in the completion or man page")
	}
}
