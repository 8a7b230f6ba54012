//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/backup"
	"github.com/pgwarden/pgwarden/integration/harness"
)

// backupCluster is a cluster whose nodes archive WAL into repo and create
// replicas from it first.
func backupCluster(t *testing.T, repo string, o clusterOpts) *cluster {
	o.extra += fmt.Sprintf("backup:\n  repository: %s\n  archive_wal: true\n", repo)
	o.pgExtra += "  create_replica_methods: [backup, basebackup]\n"
	return newCluster(t, o)
}

// timedWriter inserts numbered rows into t on whichever node accepts writes,
// recording each acknowledged row with its insert time (clock_timestamp,
// taken in the row's own single-statement transaction, just before its
// commit).
type timedWriter struct {
	c    *cluster
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	rows map[int64]time.Time
}

func startTimedWriter(c *cluster) *timedWriter {
	w := &timedWriter{c: c, stop: make(chan struct{}), done: make(chan struct{}), rows: map[int64]time.Time{}}
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		id := int64(0)
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(30 * time.Millisecond):
			}
			if conn == nil {
				for _, n := range c.nodes {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					cn, err := n.connect(ctx)
					cancel()
					if err != nil {
						continue
					}
					var ro bool
					if cn.QueryRow(context.Background(), "SELECT pg_is_in_recovery()").Scan(&ro) == nil && !ro {
						conn = cn
						break
					}
					cn.Close(context.Background())
				}
				if conn == nil {
					continue
				}
			}
			id++
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			var at time.Time
			err := conn.QueryRow(ctx, "INSERT INTO t (id) VALUES ($1) RETURNING at", id).Scan(&at)
			cancel()
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				continue
			}
			w.mu.Lock()
			w.rows[id] = at
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *timedWriter) halt() {
	close(w.stop)
	<-w.done
}

func (w *timedWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.rows)
}

// rowsAt are the ids of t on n inserted at or before at (all when at is zero).
func rowsAt(t *testing.T, n *node, port int, at time.Time) []int64 {
	t.Helper()
	var ids []int64
	err := withDSN(fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=superpass dbname=postgres sslmode=disable connect_timeout=3", port),
		func(ctx context.Context, conn *pgx.Conn) error {
			q, args := "SELECT id FROM t ORDER BY id", []any{}
			if !at.IsZero() {
				q, args = "SELECT id FROM t WHERE at <= $1 ORDER BY id", []any{at}
			}
			rows, err := conn.Query(ctx, q, args...)
			if err != nil {
				return err
			}
			ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
			return err
		})
	if err != nil {
		t.Fatalf("read rows of %s (port %d): %v", n.name, port, err)
	}
	return ids
}

func withDSN(dsn string, f func(ctx context.Context, conn *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return f(ctx, conn)
}

// switchWAL closes the primary's current segment and waits until its
// archiver has archived it; it returns the segment's name.
func switchWAL(t *testing.T, p *node) string {
	t.Helper()
	var seg string
	must(t, p.queryRow("SELECT pg_walfile_name(pg_current_wal_lsn())", &seg))
	must(t, p.exec("SELECT pg_switch_wal()"))
	harness.WaitFor(t, 60*time.Second, "segment "+seg+" archived by "+p.name, func() (bool, error) {
		var last string
		if err := p.queryRow("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", &last); err != nil {
			return false, err
		}
		return last >= seg && !strings.HasSuffix(last, ".history"), fmt.Errorf("last archived %q", last)
	})
	return seg
}

// backupsJSON is `pgwarden backup list --format json`.
func backupsJSON(t *testing.T, cfg string) backup.View {
	t.Helper()
	var v backup.View
	out := pgwarden(t, "backup", "list", "-c", cfg, "--format", "json")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("backup list --format json: %v: %s", err, out)
	}
	return v
}

// archiveListing is the repository's archive of stanza, read from the
// file system, independently of pgwarden's own parsing: segment names
// (without ".partial") and history file names.
func archiveListing(t *testing.T, repo, stanza string) (segments, histories map[string]bool) {
	t.Helper()
	segments, histories = map[string]bool{}, map[string]bool{}
	root := filepath.Join(repo, "archive", stanza)
	ids, err := os.ReadDir(root)
	must(t, err)
	for _, id := range ids {
		if !id.IsDir() {
			continue
		}
		must(t, filepath.WalkDir(filepath.Join(root, id.Name()), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			name := d.Name()
			switch {
			case strings.HasSuffix(name, ".history"):
				histories[name] = true
			case len(name) > 25 && name[24] == '-':
				segments[name[:24]] = true
			}
			return nil
		}))
	}
	return segments, histories
}

// expectedSegments are the segment names recovery reads from segment
// `from` up to `to` along the history file text of timeline tl: each
// segment from the newest timeline that had begun by the segment's end.
func expectedSegments(tl uint32, history, from, to string) []string {
	type begin struct {
		tl  uint32
		seg uint64
	}
	var begins []begin
	next := uint64(0) // where the next timeline on the line begins
	for _, l := range strings.Split(history, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		var parent uint32
		var hi, lo uint64
		fmt.Sscanf(f[0], "%d", &parent)
		fmt.Sscanf(f[1], "%X/%X", &hi, &lo)
		begins = append(begins, begin{parent, next})
		next = (hi<<32 | lo) / (16 << 20)
	}
	begins = append(begins, begin{tl, next})
	num := func(name string) uint64 {
		var tli, log, seg uint64
		fmt.Sscanf(name, "%08X%08X%08X", &tli, &log, &seg)
		return log*0x100 + seg
	}
	var out []string
	for no := num(from); no <= num(to); no++ {
		owner := begins[0].tl
		for _, b := range begins {
			if b.seg <= no {
				owner = b.tl
			}
		}
		out = append(out, fmt.Sprintf("%08X%08X%08X", owner, no/0x100, no%0x100))
	}
	return out
}

var labelRe = regexp.MustCompile(`backup (\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?) \(full\)`)

func TestBackupFollowsPrimary(t *testing.T) {
	repo := harness.Dir(t, "repo")
	c := backupCluster(t, repo, clusterOpts{ttl: 5, retry: 2})
	p := c.primary(90 * time.Second)
	c.waitReplicas(90*time.Second, p)
	cfg := c.nodes[0].cfgPath
	must(t, p.exec("CREATE TABLE t (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"))
	w := startTimedWriter(c)
	defer func() {
		select {
		case <-w.done:
		default:
			w.halt()
		}
	}()
	harness.WaitFor(t, 30*time.Second, "the writer writes", func() (bool, error) { return w.count() > 10, nil })

	// A full backup through any member's CLI, run by the leader.
	out := pgwarden(t, "backup", "create", "-c", cfg, "--type", "full")
	t.Logf("backup create:\n%s", out)
	m := labelRe.FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "%") {
		t.Fatalf("backup create printed no progress or no label:\n%s", out)
	}
	label := m[1]
	v := backupsJSON(t, cfg)
	if len(v.Backups) != 1 || v.Backups[0].Label != label || v.Backups[0].Size == 0 || v.Backups[0].RestorableTo == nil {
		t.Fatalf("backup list after one backup: %+v", v)
	}
	if l := pgwarden(t, "list", "-c", cfg); !strings.Contains(l, "last backup: full "+label) {
		t.Fatalf("pgwarden list does not show the last backup:\n%s", l)
	}
	backupStart := v.Backups[0].WALStart

	// Three switchovers, then three kill -9 failovers, all under the
	// writer. The PITR target lies after the first failover.
	for i := range 3 {
		pgwarden(t, "switchover", "-c", cfg, "--force")
		np := c.primary(60*time.Second, p)
		c.waitReplicas(90*time.Second, np)
		t.Logf("switchover %d: %s -> %s", i+1, p.name, np.name)
		p = np
	}
	var target time.Time
	for i := range 3 {
		before := w.count()
		p.killHard()
		np := c.primary(60*time.Second, p)
		t.Logf("failover %d: %s -> %s", i+1, p.name, np.name)
		harness.WaitFor(t, 30*time.Second, "writes on the new primary", func() (bool, error) { return w.count() > before+20, nil })
		if i == 0 {
			target = pickTarget(t, w, np)
		}
		p.start()
		c.waitReplicas(120*time.Second, np)
		p = np
	}
	w.halt()
	final := c.primary(30 * time.Second)
	lastSeg := switchWAL(t, final)
	survivors := rowsAt(t, final, final.pgPort, time.Time{})
	t.Logf("writer: %d rows acknowledged, %d on the final primary %s; target %s", len(w.rows), len(survivors), final.name, target.Format(time.RFC3339Nano))

	// pgwarden's verify passes ...
	out = pgwarden(t, "backup", "verify", "-c", cfg)
	t.Logf("backup verify:\n%s", out)
	if !strings.Contains(out, "verify: ok") {
		t.Fatalf("verify did not pass:\n%s", out)
	}
	// ... and the repository itself holds every timeline's history file and
	// every segment from the backup's start to the final primary's WAL.
	var tl uint32
	must(t, final.queryRow("SELECT timeline_id FROM pg_control_checkpoint()", &tl))
	harness.WaitFor(t, 30*time.Second, "the final timeline checkpointed", func() (bool, error) {
		_ = final.exec("CHECKPOINT")
		must(t, final.queryRow("SELECT timeline_id FROM pg_control_checkpoint()", &tl))
		return tl >= 7, fmt.Errorf("timeline %d", tl)
	})
	hist, err := os.ReadFile(filepath.Join(final.dir, "data", "pg_wal", fmt.Sprintf("%08X.history", tl)))
	must(t, err)
	segs, hists := archiveListing(t, repo, "test")
	for i := uint32(2); i <= tl; i++ {
		if !hists[fmt.Sprintf("%08X.history", i)] {
			t.Errorf("timeline %d's history file is not in the repository", i)
		}
	}
	want := expectedSegments(tl, string(hist), backupStart, lastSeg)
	var missing []string
	for _, s := range want {
		if !segs[s] {
			missing = append(missing, s)
		}
	}
	t.Logf("repository: %d history files, %d segments needed from %s to %s on timelines up to %d", len(hists), len(want), backupStart, lastSeg, tl)
	if len(missing) > 0 {
		t.Fatalf("segments missing from the repository: %v", missing)
	}

	t.Run("point-in-time restore", func(t *testing.T) {
		dir := filepath.Join(harness.Dir(t, "pitr"), "data")
		port := harness.Port(t)
		out := pgwarden(t, "backup", "restore", "-c", cfg, "--data-dir", dir, "--target-time", target.Format(time.RFC3339Nano), "--start", "--port", fmt.Sprint(port))
		t.Logf("backup restore:\n%s", out)
		defer exec.Command(filepath.Join(harness.PgBinDir(t), "pg_ctl"), "stop", "-D", dir, "-m", "immediate").Run()
		got := rowsAt(t, final, port, time.Time{})
		wantRows := rowsAt(t, final, final.pgPort, target)
		if !slices.Equal(got, wantRows) {
			t.Fatalf("restored %d rows (up to %v); want the %d rows committed at or before %s (up to %v)",
				len(got), lastOf(got), len(wantRows), target.Format(time.RFC3339Nano), lastOf(wantRows))
		}
		t.Logf("restored exactly the %d rows committed at or before the target", len(got))
		// A target out of reach is refused before anything is written.
		for _, bad := range [][]string{
			{"--target-time", time.Now().Add(time.Hour).Format(time.RFC3339)},
			{"--target-time", "2000-01-01T00:00:00Z"},
		} {
			d := filepath.Join(t.TempDir(), "data")
			_, errOut, code := runCLI(t, "", append([]string{"backup", "restore", "-c", cfg, "--data-dir", d}, bad...)...)
			if code == 0 || !strings.Contains(errOut, "out of the repository's reach") {
				t.Fatalf("restore to %v = exit %d: %s", bad, code, errOut)
			}
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Fatalf("a refused restore created %s", d)
			}
		}
		_, errOut, code := runCLI(t, "", "backup", "restore", "-c", cfg, "--data-dir", dir, "--latest")
		if code == 0 || !strings.Contains(errOut, "not empty") {
			t.Fatalf("restore into a non-empty directory = exit %d: %s", code, errOut)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("replica restored from the repository, then streaming", func(t *testing.T) {
		var r *node
		for _, n := range c.nodes {
			if n != final {
				r = n
				break
			}
		}
		pgwarden(t, "reinit", "-c", cfg, r.name, "--force")
		harness.WaitFor(t, 120*time.Second, r.name+" streams from the leader", func() (bool, error) {
			return r.probe("/replica") == 200, fmt.Errorf("/replica = %d", r.probe("/replica"))
		})
		// pg_basebackup labels its copy "pg_basebackup base backup";
		// pgBackRest's restore brings the backup's own label.
		label, err := os.ReadFile(filepath.Join(r.dir, "data", "backup_label.old"))
		must(t, err)
		if !strings.Contains(string(label), "LABEL: pgBackRest backup") {
			t.Fatalf("%s was not restored from the repository; backup_label.old:\n%s", r.name, label)
		}
		must(t, final.exec("INSERT INTO t (id) VALUES (-1)"))
		waitRows(t, 30*time.Second, int64(len(survivors)+1), r)
	})
	if t.Failed() {
		return
	}

	t.Run("a backup stopped by kill -9 of the leader is not listed; the next one succeeds", func(t *testing.T) {
		p := c.primary(30 * time.Second)
		before := len(backupsJSON(t, cfg).Backups)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _, _ = runCLI(t, "", "backup", "create", "-c", cfg, "--type", "full")
		}()
		harness.WaitFor(t, 30*time.Second, "a backup running", func() (bool, error) {
			v := backupsJSON(t, cfg)
			return v.Running != nil && v.Running.Member == p.name, nil
		})
		p.killHard()
		np := c.primary(60*time.Second, p)
		<-done
		v := backupsJSON(t, cfg)
		if len(v.Backups) != before {
			t.Fatalf("after the interrupted backup %d backups are listed; want %d: %+v", len(v.Backups), before, v.Backups)
		}
		p.start()
		c.waitReplicas(120*time.Second, np)
		out := pgwarden(t, "backup", "create", "-c", cfg, "--type", "full")
		if v := backupsJSON(t, cfg); len(v.Backups) != before+1 || v.Running != nil {
			t.Fatalf("the next backup did not complete: %s\n%+v", out, v)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("split brain: a diverged former primary's archive is refused", func(t *testing.T) {
		splitBrain(t, c, repo, cfg)
	})
}

// splitBrain kills the leader, and once its successor has archived its new
// timeline, brings the old leader's PostgreSQL up by hand (the cluster
// paused, as an operator or a partition would leave it) promoted to that
// same timeline without seeing the repository: the timeline's history file
// or its segments, which the new primary archived, now differ from what
// the old one tries to archive.
func splitBrain(t *testing.T, c *cluster, repo, cfg string) {
	p := c.primary(30 * time.Second)
	c.waitReplicas(60*time.Second, p)
	p.killHard()
	np := c.primary(60*time.Second, p)
	must(t, np.exec("INSERT INTO t (id) VALUES (-2)"))
	var tl uint32
	harness.WaitFor(t, 30*time.Second, "the new primary's timeline in pg_control", func() (bool, error) {
		_ = np.exec("CHECKPOINT")
		err := np.queryRow("SELECT timeline_id FROM pg_control_checkpoint()", &tl)
		return err == nil && tl > 1, err
	})
	histName := fmt.Sprintf("%08X.history", tl)
	switchWAL(t, np)
	harness.WaitFor(t, 30*time.Second, histName+" in the repository", func() (bool, error) {
		_, h := archiveListing(t, repo, "test")
		return h[histName], nil
	})
	theirs := repoFile(t, repo, histName)
	pgwarden(t, "pause", "-c", cfg)
	defer pgwarden(t, "resume", "-c", cfg)

	// The old leader's agent comes back (paused: it leaves PostgreSQL alone).
	out := &lockedBuffer{}
	cmd := exec.Command(harness.Binary(t), "agent", "-c", p.cfgPath)
	cmd.Stdout = out
	p.agent = harness.Start(t, p.name, cmd)
	harness.WaitFor(t, 30*time.Second, p.name+"'s agent answers", func() (bool, error) { return p.probe("/patroni") == 200, nil })
	data := filepath.Join(p.dir, "data")
	must(t, os.WriteFile(filepath.Join(data, "standby.signal"), nil, 0o600))
	pgctl := filepath.Join(harness.PgBinDir(t), "pg_ctl")
	if b, err := exec.Command(pgctl, "start", "-D", data, "-l", filepath.Join(p.dir, "data.log"), "-w", "-t", "60",
		"-o", "-c restore_command='' -c primary_conninfo=''").CombinedOutput(); err != nil {
		t.Fatalf("start %s by hand: %v: %s", p.name, err, b)
	}
	defer exec.Command(pgctl, "stop", "-D", data, "-m", "immediate").Run()
	if b, err := exec.Command(pgctl, "promote", "-D", data, "-w").CombinedOutput(); err != nil {
		t.Fatalf("promote %s by hand: %v: %s", p.name, err, b)
	}
	var ptl uint32
	harness.WaitFor(t, 30*time.Second, p.name+" promoted", func() (bool, error) {
		_ = p.exec("CHECKPOINT")
		err := p.queryRow("SELECT timeline_id FROM pg_control_checkpoint()", &ptl)
		return err == nil && ptl == tl, fmt.Errorf("timeline %d, want %d", ptl, tl)
	})
	_ = p.exec("INSERT INTO t (id) VALUES (-3)")
	_ = p.exec("SELECT pg_switch_wal()")
	var failed string
	harness.WaitFor(t, 60*time.Second, p.name+"'s agent reports the refused archive", func() (bool, error) {
		m := failureMetric.FindStringSubmatch(metrics(t, p))
		if m == nil {
			return false, fmt.Errorf("no failure metric yet")
		}
		failed = m[1]
		return strings.Contains(out.String(), "wal archive failing") && strings.Contains(out.String(), "segment="+failed), fmt.Errorf("no log line for %s", failed)
	})
	t.Logf("%s's archive of %s refused; agent said: %s", p.name, failed, grepLine(out.String(), "wal archive failing"))
	if got := repoFile(t, repo, histName); got != theirs {
		t.Fatalf("the repository's %s was overwritten:\n%s\nwas:\n%s", histName, got, theirs)
	}
}

var failureMetric = regexp.MustCompile(`pgwarden_wal_archive_last_failure_timestamp_seconds\{[^}]*segment="([^"]+)"`)

func metrics(t *testing.T, n *node) string {
	resp, err := httpc.Get(n.api("/metrics"))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = io.Copy(&b, resp.Body)
	return b.String()
}

func grepLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// repoFile is a history file of the repository's archive, as stored
// (pgBackRest keeps history files uncompressed).
func repoFile(t *testing.T, repo, name string) string {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(repo, "archive", "test", "*", name))
	if len(matches) != 1 {
		t.Fatalf("%s in the repository: %v", name, matches)
	}
	b, err := os.ReadFile(matches[0])
	must(t, err)
	return string(b)
}

// lockedBuffer collects a process's output for the test to search.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func lastOf(ids []int64) int64 {
	if len(ids) == 0 {
		return 0
	}
	return ids[len(ids)-1]
}

// pickTarget is a time between two consecutive rows that np (the new
// primary after a failover) holds, at least 20 ms from each.
func pickTarget(t *testing.T, w *timedWriter, np *node) time.Time {
	t.Helper()
	var ids []int64
	var ats []time.Time
	must(t, np.withConn(func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, "SELECT id, at FROM t ORDER BY id DESC LIMIT 20")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var at time.Time
			if err := rows.Scan(&id, &at); err != nil {
				return err
			}
			ids, ats = append(ids, id), append(ats, at)
		}
		return rows.Err()
	}))
	for i := len(ats) - 1; i > 0; i-- { // oldest pair first
		if gap := ats[i-1].Sub(ats[i]); gap >= 40*time.Millisecond {
			return ats[i].Add(gap / 2)
		}
	}
	t.Fatal("no two consecutive rows 40 ms apart after the failover")
	return time.Time{}
}
