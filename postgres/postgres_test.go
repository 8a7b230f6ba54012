package postgres

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/internal/testlog"
)

func TestRenderConfQuotesAndOrder(t *testing.T) {
	s := New(Config{Listen: "127.0.0.1:5433", ReplUser: "rep", ReplPassword: `it's\x`, AppName: "node2",
		Parameters: map[string]string{"work_mem": "64MB", "port": "9999", "application_name": `a'b`}}, nil)
	conf, err := s.renderConf(&Upstream{Host: "10.0.0.1", Port: 5432, Slot: "node2"})
	if err != nil {
		t.Fatal(err)
	}
	// The operator's port comes first, the managed one last (last wins).
	if strings.Index(conf, "port = '9999'") > strings.Index(conf, "port = 5433") {
		t.Fatalf("managed port not after the operator's:\n%s", conf)
	}
	for _, want := range []string{"work_mem = '64MB'", "application_name = 'a''b'", "listen_addresses = '127.0.0.1'", "primary_slot_name = 'node2'", "recovery_target_timeline = 'latest'"} {
		if !strings.Contains(conf, want) {
			t.Errorf("conf lacks %q:\n%s", want, conf)
		}
	}
	// The conninfo round-trips through both levels of quoting.
	ci := s.conninfo(Upstream{Host: "10.0.0.1", Port: 5432})
	if got := upstreamFromConninfo(ci); got != "10.0.0.1:5432" {
		t.Fatalf("upstream of %q = %q", ci, got)
	}
	// The password is in the pgpass file beside the data directory, not
	// in primary_conninfo (pg_settings shows it; base backups copy it).
	var passfile string
	for _, f := range splitConninfo(ci) {
		if strings.HasPrefix(f, "password=") {
			t.Fatalf("primary_conninfo holds the password: %q", ci)
		}
		if v, ok := strings.CutPrefix(f, "passfile="); ok {
			passfile = v
		}
	}
	if passfile != s.passFile() || strings.HasPrefix(passfile, filepath.Clean(s.cfg.DataDir)+"/") {
		t.Fatalf("passfile %q; want %q, outside the data directory", passfile, s.passFile())
	}
	if got := pgpassLine(`rep:x`, `it's\x:y`); got != `*:*:*:rep\:x:it's\\x\:y`+"\n" {
		t.Fatalf("pgpass line %q", got)
	}
	if conf, _ := s.renderConf(nil); strings.Contains(conf, "primary_conninfo") {
		t.Fatal("primary configuration has primary_conninfo")
	}
}

func TestParseControlData(t *testing.T) {
	out := `pg_control version number:            1300
Database system identifier:           7301234567890123456
Database cluster state:               shut down in recovery
Latest checkpoint location:           0/3000060
Latest checkpoint's TimeLineID:       2
`
	cd := parseControlData(out)
	if cd.state() != "shut down in recovery" || cd["Database system identifier"] != "7301234567890123456" || cd["Latest checkpoint location"] != "0/3000060" {
		t.Fatalf("parsed %v", cd)
	}
}

func TestDefaultHBA(t *testing.T) {
	hba := New(Config{ReplUser: "rep"}, nil).renderHBA()
	for _, want := range []string{"local all all peer", "host all all samenet scram-sha-256", "host replication rep samenet scram-sha-256"} {
		if !strings.Contains(hba, want) {
			t.Errorf("default pg_hba lacks %q", want)
		}
	}
	if strings.Contains(hba, "trust") {
		t.Error("default pg_hba trusts someone")
	}
	custom := New(Config{PgHBA: []string{"host all all 10.0.0.0/8 scram-sha-256"}}, nil).renderHBA()
	if strings.Contains(custom, "samenet") || !strings.Contains(custom, "10.0.0.0/8") {
		t.Errorf("configured pg_hba not used whole: %s", custom)
	}
}

func TestConfQuoteRoundTrip(t *testing.T) {
	for _, v := range []string{"", "plain", `it's`, `back\slash`, `host='x' password='a\'b'`} {
		if got := confUnquote(confQuote(v)); got != v {
			t.Errorf("confUnquote(confQuote(%q)) = %q", v, got)
		}
	}
}

func TestSyncStandbyNames(t *testing.T) {
	cases := []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"*"}, "*"},
		{[]string{"node2"}, `FIRST 1 ("node2")`},
		{[]string{"a", `we"ird`}, `FIRST 2 ("a", "we""ird")`},
	}
	for _, c := range cases {
		if got := syncStandbyNames(c.in); got != c.want {
			t.Errorf("SyncStandbyNames(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestCloneCancelKillsTree: a pg_basebackup that hangs (here a stand-in
// that, like the real one, has a child of its own streaming WAL) is killed
// with its children when the clone's deadline passes, and Clone says so
// promptly instead of waiting for the pipe the child holds open.
func TestCloneCancelKillsTree(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	childPid := filepath.Join(dir, "child.pid")
	script := "#!/bin/sh\nsleep 300 &\necho $! > " + childPid + "\nexec sleep 300\n"
	if err := os.WriteFile(filepath.Join(bin, "pg_basebackup"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := New(Config{BinDir: bin, DataDir: filepath.Join(dir, "data"), ReplUser: "rep"}, testlog.New(t))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Clone(ctx, Upstream{Host: "127.0.0.1", Port: 1})
	took := time.Since(start)
	if err == nil {
		t.Fatal("a clone cut by its deadline succeeded")
	}
	if took > 3*time.Second {
		t.Fatalf("Clone returned %s after its deadline passed: the child kept it waiting", took-500*time.Millisecond)
	}
	b, rerr := os.ReadFile(childPid)
	if rerr != nil {
		t.Fatalf("the stand-in did not start its child: %v", rerr)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := syscall.Kill(pid, 0); err != nil {
			break
		}
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(st), ") Z ") {
			break // dead, waiting for init to reap it
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("pg_basebackup's child %d still runs 5 s after the clone gave up", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Fatalf("the half-copied data directory was left behind (stat: %v)", err)
	}
}
