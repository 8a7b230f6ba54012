//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/backup"
	"github.com/pgwarden/pgwarden/integration/harness"
)

// scheduledCluster is a cluster archiving into repo with the given
// schedule and retention lines under backup.
func scheduledCluster(t *testing.T, repo string, nodes int, lines string) *cluster {
	t.Helper()
	return newCluster(t, clusterOpts{nodes: nodes, ttl: 5, retry: 2,
		extra: fmt.Sprintf("backup:\n  repository: %s\n  archive_wal: true\n  timezone: UTC\n%s", repo, lines)})
}

// infoLabels are the backups of stanza "test" as pgBackRest's own info
// reports them, read with the node's own pgBackRest configuration and
// parsed here, independently of pgwarden.
func infoLabels(t *testing.T, n *node) []string {
	t.Helper()
	conf := filepath.Join(n.dir, "data.pgbackrest", "pgbackrest.conf")
	out, err := exec.Command("pgbackrest", "--config="+conf, "--stanza=test", "--log-level-console=error", "info", "--output=json").Output()
	if err != nil {
		t.Fatalf("pgbackrest info: %v", err)
	}
	var info []struct {
		Backup []struct {
			Label string `json:"label"`
		} `json:"backup"`
	}
	if err := json.Unmarshal(out, &info); err != nil || len(info) != 1 {
		t.Fatalf("pgbackrest info: %v: %s", err, out)
	}
	var labels []string
	for _, b := range info[0].Backup {
		labels = append(labels, b.Label)
	}
	return labels
}

func viewLabels(v backup.View) []string {
	var labels []string
	for _, b := range v.Backups {
		labels = append(labels, b.Label)
	}
	return labels
}

// TestBackupSchedule: a full, a diff and a logical dump scheduled every
// minute run on the leader, once for their slot; retention (daily: 1)
// then removes the manual full and dump taken before them and nothing
// else; backup list agrees with pgBackRest's info; the dump came from the
// replica and restores into an empty server with the same roles and row
// counts.
func TestBackupSchedule(t *testing.T) {
	t.Parallel()
	repo := harness.Dir(t, "repo")
	c := scheduledCluster(t, repo, 2, "  schedule: {full: '* * * * *', diff: '* * * * *', logical: '* * * * *'}\n  retention: {daily: 1}\n")
	p := c.primary(90 * time.Second)
	c.waitReplicas(90*time.Second, p)
	cfg := c.nodes[0].cfgPath
	replica := c.other(p)
	for _, q := range []string{
		"CREATE ROLE app LOGIN PASSWORD 'apppass'", "CREATE ROLE reporting NOLOGIN",
		"CREATE DATABASE appdb OWNER app",
		"CREATE TABLE t (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())",
		"INSERT INTO t (id) SELECT g FROM generate_series(1, 500) g",
	} {
		must(t, p.exec(q))
	}
	must(t, withDSN(fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=superpass dbname=appdb sslmode=disable", p.pgPort),
		func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, `CREATE TABLE orders (id int PRIMARY KEY, note text);
				INSERT INTO orders SELECT g, repeat('x', g % 50) FROM generate_series(1, 1234) g;
				CREATE TABLE empty_one (id int); GRANT SELECT ON orders TO reporting`)
			return err
		}))

	// Manual runs first: the scheduled ones are newer, so daily: 1 removes
	// these. The schedule may already run one: retry while the lock is held.
	var manual []string
	for _, kind := range []string{"full", "logical"} {
		var out string
		harness.WaitFor(t, 90*time.Second, "a manual "+kind, func() (bool, error) {
			o, err := pgwardenErr(t, "backup", "create", "-c", cfg, "--type", kind)
			out = o
			return err == nil, fmt.Errorf("%v: %s", err, o)
		})
		t.Logf("manual %s: %s", kind, out)
	}
	v := backupsJSON(t, cfg)
	manual = append(manual, v.LastRuns["full"].Label, v.LastRuns["logical"].Label)
	t.Logf("manual runs: %v", manual)

	// Wait for a scheduled slot in which all three kinds ran to their end.
	var slot time.Time
	harness.WaitFor(t, 150*time.Second, "one scheduled slot of full, diff and logical done", func() (bool, error) {
		v = backupsJSON(t, cfg)
		st := map[string]string{}
		for _, k := range []string{"full", "diff", "logical"} {
			s := v.LastRuns[k].Schedule
			if s == nil || !s.Done || s.Member == "" || s.Error != "" {
				return false, fmt.Errorf("%s: %+v", k, s)
			}
			st[k] = s.Slot.UTC().Format(time.RFC3339)
		}
		// A baseline (first sight) is done too, with no run: a real slot
		// is a whole minute, after the manual runs.
		f := v.LastRuns["full"].Schedule
		real := f.Slot.Second() == 0 && st["diff"] == st["full"] && st["logical"] == st["full"] &&
			v.LastRuns["logical"].Label != manual[1] && v.LastRuns["full"].Label != manual[0]
		slot = f.Slot
		return real, fmt.Errorf("slots %v", st)
	})
	for _, k := range []string{"full", "diff", "logical"} {
		r := v.LastRuns[k]
		if !r.OK || r.Member != p.name || r.Schedule.Member != p.name {
			t.Fatalf("scheduled %s: %+v; want it done on the leader %s", k, r, p.name)
		}
	}
	full, diff := v.LastRuns["full"].Label, v.LastRuns["diff"].Label
	t.Logf("slot %s: full %s, diff %s, dump %s", slot.Format(time.RFC3339), full, diff, v.LastRuns["logical"].Label)

	// Retention after the dump: one day, all of it today: the newest (the
	// diff) and the full it needs stay; the manual full goes. The next
	// minute's runs may add newer ones, and then remove these: read both
	// views in one go and compare them, then check this slot's pair.
	var info []string
	harness.WaitFor(t, 60*time.Second, "backup list and pgBackRest's info agree", func() (bool, error) {
		v = backupsJSON(t, cfg)
		info = infoLabels(t, p)
		return slices.Equal(viewLabels(v), info), fmt.Errorf("backup list %v, info %v", viewLabels(v), info)
	})
	if slices.Contains(info, manual[0]) {
		t.Fatalf("retention kept the manual full %s: %v", manual[0], info)
	}
	if len(info) != 2 || !strings.HasSuffix(info[1], "D") || !strings.HasPrefix(info[1], info[0]+"_") {
		t.Fatalf("repository holds %v; want exactly a full and the diff on it (daily: 1 keeps the newest and what it needs)", info)
	}
	if b := v.Backups[1]; b.Recovery != "point-in-time" || len(b.Keep) == 0 || b.Keep[0] != "newest" {
		t.Fatalf("newest backup in backup list: recovery %q, kept for %v", b.Recovery, b.Keep)
	}
	if slices.ContainsFunc(v.Dumps, func(d backup.DumpView) bool { return d.Stamp == manual[1] }) {
		t.Fatalf("retention kept the manual dump %s: %+v", manual[1], v.Dumps)
	}
	if len(v.Dumps) != 1 {
		t.Fatalf("dumps %+v; want one (daily: 1)", v.Dumps)
	}
	if _, err := os.Stat(filepath.Join(repo, "logical", "test", manual[1])); !os.IsNotExist(err) {
		t.Fatalf("the manual dump's directory is still there: %v", err)
	}
	list := pgwarden(t, "backup", "list", "-c", cfg)
	t.Logf("backup list:\n%s", list)
	if !strings.Contains(list, "point-in-time") || !strings.Contains(list, "DUMP") {
		t.Fatalf("backup list shows no recovery kind or no dumps:\n%s", list)
	}

	// The dump was taken from the replica; it restores into an empty
	// server with the same roles and row counts.
	d := v.Dumps[0]
	if !d.FromReplica || d.Member != replica.name {
		t.Fatalf("dump %s came from %s (replica %v); want the replica %s", d.Stamp, d.Member, d.FromReplica, replica.name)
	}
	for _, f := range d.Files {
		st, err := os.Stat(filepath.Join(repo, "logical", "test", d.Stamp, f.Name))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("dump file %s: %v, mode %v; want 0600", f.Name, err, st.Mode())
		}
	}
	target := emptyServer(t)
	began := time.Now()
	out := pgwarden(t, "backup", "restore", "-c", cfg, "--logical", d.Stamp,
		"--dsn", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", target))
	t.Logf("logical restore in %s: %s", time.Since(began).Round(100*time.Millisecond), out)
	for _, db := range []string{"postgres", "appdb"} {
		want := tableCounts(t, p.pgPort, "superpass", db)
		got := tableCounts(t, target, "", db)
		if len(want) == 0 || !maps.Equal(got, want) {
			t.Fatalf("database %s: row counts after the restore %v; on the cluster %v", db, got, want)
		}
	}
	if want, got := roles(t, p.pgPort, "superpass"), roles(t, target, ""); !slices.Equal(got, want) {
		t.Fatalf("roles after the restore %v; on the cluster %v", got, want)
	}
	// The password came along: app logs in with it.
	must(t, withDSN(fmt.Sprintf("host=127.0.0.1 port=%d user=app password=apppass dbname=appdb sslmode=disable", target),
		func(ctx context.Context, conn *pgx.Conn) error { return conn.Ping(ctx) }))
}

// TestDrill: a drill passes on a good backup (restored, recovered, every
// table read, amcheck), and fails, naming the step and the file, once a
// file of that backup in the repository is corrupted; backup list and the
// metrics say so.
func TestDrill(t *testing.T) {
	t.Parallel()
	repo := harness.Dir(t, "repo")
	c := scheduledCluster(t, repo, 1, "")
	p := c.primary(90 * time.Second)
	cfg := p.cfgPath
	must(t, p.exec("CREATE TABLE t (id bigint PRIMARY KEY, v text)"))
	must(t, p.exec("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g"))
	out := pgwarden(t, "backup", "create", "-c", cfg, "--type", "full")
	label := labelRe.FindStringSubmatch(out)
	if label == nil {
		t.Fatalf("no label in:\n%s", out)
	}
	began := time.Now()
	out = pgwarden(t, "backup", "drill", "-c", cfg)
	t.Logf("drill in %s: %s", time.Since(began).Round(100*time.Millisecond), out)
	if !strings.Contains(out, "drill passed") || !strings.Contains(out, label[1]) || !strings.Contains(out, "amcheck passed") {
		t.Fatalf("drill output:\n%s", out)
	}
	if m := metrics(t, p); !strings.Contains(m, "pgwarden_backup_drill_last_success_timestamp_seconds{") || !strings.Contains(grepLine(m, "pgwarden_backup_drill_failed{"), " 0") {
		t.Fatalf("metrics after a good drill:\n%s\n%s", grepLine(m, "drill_last_success"), grepLine(m, "drill_failed"))
	}
	if entries, _ := os.ReadDir(filepath.Join(p.dir, "data.drill")); len(entries) != 0 {
		t.Fatalf("the drill left %d entries in its scratch directory", len(entries))
	}

	// Corrupt the largest file of the backup: the table's.
	var biggest string
	var size int64
	must(t, filepath.Walk(filepath.Join(repo, "backup", "test", label[1], "pg_data", "base"), func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && info.Size() > size {
			biggest, size = path, info.Size()
		}
		return err
	}))
	if size < 1024 {
		t.Fatalf("no file of the backup to corrupt (largest %s, %d bytes)", biggest, size)
	}
	b, err := os.ReadFile(biggest)
	must(t, err)
	for i := len(b) / 3; i < len(b)/3+512 && i < len(b); i++ {
		b[i] ^= 0xff
	}
	must(t, os.WriteFile(biggest, b, 0o640))
	out, err = pgwardenErr(t, "backup", "drill", "-c", cfg)
	t.Logf("drill on a corrupted backup: %v\n%s", err, out)
	if err == nil || !strings.Contains(out, "restore backup "+label[1]) {
		t.Fatalf("drill on a corrupted repository file: err %v, output:\n%s", err, out)
	}
	list := pgwarden(t, "backup", "list", "-c", cfg)
	if !strings.Contains(list, "last drill") || !strings.Contains(list, "FAILED") {
		t.Fatalf("backup list does not show the failed drill:\n%s", list)
	}
	if m := metrics(t, p); !strings.Contains(grepLine(m, "pgwarden_backup_drill_failed{"), " 1") {
		t.Fatalf("metrics after a failed drill: %s", grepLine(m, "pgwarden_backup_drill_failed{"))
	}
}

// emptyServer starts a fresh PostgreSQL (initdb, trust on loopback) on a
// free port; it is stopped by PID at the end of the test.
func emptyServer(t *testing.T) int {
	t.Helper()
	bin := harness.PgBinDir(t)
	dir := harness.Dir(t, "target")
	data := filepath.Join(dir, "data")
	if out, err := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v: %s", err, out)
	}
	port := harness.Port(t)
	harness.Start(t, "target-postgres", exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", fmt.Sprint(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "shared_buffers=16MB"))
	harness.WaitFor(t, 30*time.Second, "the empty server accepts connections", func() (bool, error) {
		err := withDSN(fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", port),
			func(ctx context.Context, conn *pgx.Conn) error { return conn.Ping(ctx) })
		return err == nil, err
	})
	return port
}

func tableCounts(t *testing.T, port int, password, db string) map[string]int64 {
	t.Helper()
	counts := map[string]int64{}
	err := withDSN(fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password='%s' dbname=%s sslmode=disable", port, password, db),
		func(ctx context.Context, conn *pgx.Conn) error {
			rows, err := conn.Query(ctx, `SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables ORDER BY 1`)
			if err != nil {
				return err
			}
			tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			for _, tb := range tables {
				var n int64
				if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+tb).Scan(&n); err != nil {
					return err
				}
				counts[tb] = n
			}
			return nil
		})
	if err != nil {
		t.Fatalf("count rows of %s on port %d: %v", db, port, err)
	}
	return counts
}

func roles(t *testing.T, port int, password string) []string {
	t.Helper()
	var out []string
	err := withDSN(fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password='%s' dbname=postgres sslmode=disable", port, password),
		func(ctx context.Context, conn *pgx.Conn) error {
			rows, err := conn.Query(ctx, `SELECT rolname || ' login=' || rolcanlogin || ' super=' || rolsuper || ' repl=' || rolreplication
				FROM pg_roles WHERE rolname NOT LIKE 'pg\_%' ORDER BY 1`)
			if err != nil {
				return err
			}
			out, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
	if err != nil {
		t.Fatalf("roles on port %d: %v", port, err)
	}
	return out
}

// pgwardenErr runs the CLI; a non-zero exit is an error, its stderr and
// stdout the output.
func pgwardenErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, errOut, code := runCLI(t, "", args...)
	if code != 0 {
		return errOut + out, fmt.Errorf("pgwarden %s: exit %d", strings.Join(args, " "), code)
	}
	return out, nil
}
