//go:build integration

package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
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
func archiveListing(t testing.TB, repo, stanza string) (segments, histories map[string]bool) {
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

// TestBackupFollowsPrimary: on a 3-node cluster archiving WAL, a full
// backup, then 3 switchovers and 3 kill -9 failovers under a writer; backup
// verify passes and the repository holds every timeline's history file and
// every segment from the backup's start to the final primary's WAL. Then,
// on the same cluster and repository (short subtest names keep socket
// paths under the kernel's limit):
//   - pitr: a restore to a time between two commits after the first kill -9
//     failover holds exactly the rows committed up to it; targets out of
//     reach and non-empty directories are refused, nothing written;
//   - replica-from-repository: a reinitialized replica is restored from the
//     repository (its backup_label is pgBackRest's, not pg_basebackup's),
//     then streams;
//   - interrupted: a backup stopped by kill -9 of the leader is not listed;
//     the next one succeeds;
//   - split-brain: a diverged former primary promoted to the new primary's
//     timeline has its archive refused; its agent reports it (metric, log
//     line naming the file) and the repository keeps the new primary's;
//   - failing-archive: with the repository unwritable a switchover still
//     completes within seconds;
//   - new-cluster: a new scope bootstrapped from the backup to the same
//     target holds the same rows, elects a leader, streams to a replica and
//     archives into its own stanza.
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

	t.Run("pitr", func(t *testing.T) {
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

	t.Run("replica-from-repository", func(t *testing.T) {
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

	t.Run("interrupted", func(t *testing.T) {
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

	t.Run("split-brain", func(t *testing.T) {
		splitBrain(t, c, repo, cfg)
	})

	t.Run("failing-archive", func(t *testing.T) {
		archiveFailure(t, c, repo, cfg)
	})

	t.Run("new-cluster", func(t *testing.T) {
		want := rowsAt(t, final, final.pgPort, target)
		nc := newCluster(t, clusterOpts{nodes: 2, ttl: 5, retry: 2, scope: "copy",
			extra: fmt.Sprintf("backup:\n  repository: %s\n  archive_wal: true\nbootstrap: {method: backup, stanza: test, target_time: %q}\n",
				repo, target.Format(time.RFC3339Nano)),
			pgExtra: "  create_replica_methods: [backup, basebackup]\n"})
		np := nc.primary(180 * time.Second)
		nc.waitReplicas(120*time.Second, np)
		if got := rowsAt(t, np, np.pgPort, time.Time{}); !slices.Equal(got, want) {
			t.Fatalf("the new cluster's leader %s holds %d rows (up to %d); want the %d up to the target (up to %d)", np.name, len(got), lastOf(got), len(want), lastOf(want))
		}
		must(t, np.exec("INSERT INTO t (id) VALUES (-10)"))
		switchWAL(t, np)
		if segs, _ := archiveListing(t, repo, "copy"); len(segs) == 0 {
			t.Fatal("the new cluster archives nothing into its own stanza")
		}
		t.Logf("new cluster: leader %s with the %d rows up to the target, replica streaming, archiving into stanza copy", np.name, len(want))
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
	out := &harness.LockedBuffer{}
	cmd := exec.Command(harness.Binary(t), "agent", "-c", p.cfgPath)
	cmd.Stdout = out
	p.agent = harness.Start(c.t, p.name, cmd) // outlives this subtest
	harness.WaitFor(t, 30*time.Second, p.name+"'s agent answers", func() (bool, error) { return p.probe("/patroni") == 200, nil })
	data := filepath.Join(p.dir, "data")
	must(t, os.WriteFile(filepath.Join(data, "standby.signal"), nil, 0o600))
	pgctl := filepath.Join(harness.PgBinDir(t), "pg_ctl")
	// The killed postmaster may still be a zombie, its lock file in place
	// (the failover no longer waits out the lease): retried until then.
	harness.WaitFor(t, 30*time.Second, "start "+p.name+" by hand", func() (bool, error) {
		b, err := exec.Command(pgctl, "start", "-D", data, "-l", filepath.Join(p.dir, "data.log"), "-w", "-t", "60",
			"-o", "-c restore_command='' -c primary_conninfo=''").CombinedOutput()
		if err != nil && !strings.Contains(string(b), "another server might be running") {
			t.Fatalf("start %s by hand: %v: %s", p.name, err, b)
		}
		return err == nil, fmt.Errorf("%v: %s", err, b)
	})
	defer func() {
		// The diverged node is rebuilt from the cluster once it resumes.
		_ = exec.Command(pgctl, "stop", "-D", data, "-m", "immediate").Run()
		must(t, os.RemoveAll(data))
	}()
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

// archiveFailure makes the repository unwritable, so the primary's
// archive_command fails; a switchover still completes at once, the old
// primary's agent reports the failure, and archiving resumes once the
// repository is writable again.
func archiveFailure(t *testing.T, c *cluster, repo, cfg string) {
	p := c.primary(30 * time.Second)
	c.waitReplicas(60*time.Second, p)
	dirs, _ := filepath.Glob(filepath.Join(repo, "archive", "test", "*", "*"))
	dirs = append(dirs, filepath.Dir(dirs[0]))
	for _, d := range dirs {
		must(t, os.Chmod(d, 0o500))
	}
	restore := func() {
		for _, d := range dirs {
			_ = os.Chmod(d, 0o750)
		}
	}
	defer restore()
	must(t, p.exec("INSERT INTO t (id) VALUES (-20)"))
	must(t, p.exec("SELECT pg_switch_wal()"))
	harness.WaitFor(t, 60*time.Second, p.name+" reports its failing archive", func() (bool, error) {
		return failureMetric.MatchString(metrics(t, p)), nil
	})
	start := time.Now()
	pgwarden(t, "switchover", "-c", cfg, "--force")
	np := c.primary(30*time.Second, p)
	took := time.Since(start)
	t.Logf("switchover %s -> %s with a failing archive took %s", p.name, np.name, took.Round(100*time.Millisecond))
	if took > 20*time.Second {
		t.Fatalf("switchover with a failing archive took %s", took)
	}
	restore()
	c.waitReplicas(120*time.Second, np)
	switchWAL(t, np)
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

func lastOf(ids []int64) int64 {
	if len(ids) == 0 {
		return 0
	}
	return ids[len(ids)-1]
}

// pickTarget is a time between two consecutive rows that np (the new
// primary after a failover) holds, at least 12 ms from each (a row's commit follows its insert time by about a millisecond).
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
		if gap := ats[i-1].Sub(ats[i]); gap >= 25*time.Millisecond {
			return ats[i].Add(gap / 2)
		}
	}
	t.Fatal("no two consecutive rows 25 ms apart after the failover")
	return time.Time{}
}

// TestBackupS3: the archive, a base backup and a restore through an
// S3-compatible store (versitygw over TLS with a CA made here, path-style
// addressing).
func TestBackupS3(t *testing.T) {
	vgw := versitygw(t)
	dir := harness.Dir(t, "s3")
	ca, cert, key := selfSignedTLS(t, dir)
	root := filepath.Join(dir, "root")
	must(t, os.MkdirAll(filepath.Join(root, "pgwarden"), 0o700)) // the bucket
	must(t, os.WriteFile(filepath.Join(dir, "key"), []byte("pgwarden-test\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "secret"), []byte("s3cret-s3cret\n"), 0o600))
	port := harness.Port(t)
	harness.Start(t, "versitygw", exec.Command(vgw, "--access", "pgwarden-test", "--secret", "s3cret-s3cret",
		"--port", fmt.Sprintf("127.0.0.1:%d", port), "--cert", cert, "--key", key, "--quiet", "posix", root))
	harness.WaitFor(t, 20*time.Second, "versitygw listening", func() (bool, error) {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil, err
	})
	// pgBackRest 2.45 matches the endpoint against the certificate's DNS
	// names only, not its IP addresses: localhost, on loopback.
	extra := fmt.Sprintf(`backup:
  archive_wal: true
  s3: {bucket: pgwarden, endpoint: "localhost:%d", region: us-east-1, uri_style: path, key_file: %s, secret_file: %s, ca_file: %s, verify_tls: true}
`, port, filepath.Join(dir, "key"), filepath.Join(dir, "secret"), ca)
	c := newCluster(t, clusterOpts{nodes: 1, ttl: 5, retry: 2, extra: extra})
	p := c.primary(90 * time.Second)
	cfg := p.cfgPath
	must(t, p.exec("CREATE TABLE t (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"))
	must(t, p.exec("INSERT INTO t (id) SELECT g FROM generate_series(1, 1000) g"))
	out := pgwarden(t, "backup", "create", "-c", cfg, "--type", "full")
	t.Logf("backup create over S3:\n%s", out)
	must(t, p.exec("INSERT INTO t (id) SELECT g FROM generate_series(1001, 2000) g"))
	switchWAL(t, p)
	v := backupsJSON(t, cfg)
	if len(v.Backups) != 1 || !strings.HasPrefix(v.Repository, "s3://pgwarden/") {
		t.Fatalf("backup list over S3: %+v", v)
	}
	if files, _ := filepath.Glob(filepath.Join(root, "pgwarden", "pgwarden", "archive", "test", "*", "*", "*")); len(files) == 0 {
		t.Fatal("no WAL in the bucket's directory")
	}
	data := filepath.Join(harness.Dir(t, "restored"), "data")
	rport := harness.Port(t)
	out = pgwarden(t, "backup", "restore", "-c", cfg, "--data-dir", data, "--latest", "--start", "--port", fmt.Sprint(rport))
	t.Logf("backup restore over S3:\n%s", out)
	defer exec.Command(filepath.Join(harness.PgBinDir(t), "pg_ctl"), "stop", "-D", data, "-m", "immediate").Run()
	if got := rowsAt(t, p, rport, time.Time{}); len(got) != 2000 {
		t.Fatalf("restored %d rows from S3; want 2000", len(got))
	}
}

// versitygw is the S3 server binary: $PGWARDEN_VERSITYGW, or v1.8.0 built
// once with go install into $PGWARDEN_TOOLS_DIR (default
// /var/tmp/pgwarden-tools), with its own module and build caches there.
func versitygw(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PGWARDEN_VERSITYGW"); p != "" {
		return p
	}
	dir := os.Getenv("PGWARDEN_TOOLS_DIR")
	if dir == "" {
		dir = "/var/tmp/pgwarden-tools"
	}
	bin := filepath.Join(dir, "versitygw-v1.8.0")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	gobin := filepath.Join(dir, "bin")
	must(t, os.MkdirAll(gobin, 0o755))
	const pkg = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", pkg)
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOPATH="+filepath.Join(dir, "gopath"),
		"GOMODCACHE="+filepath.Join(dir, "gomod"), "GOCACHE="+filepath.Join(dir, "gocache"), "GOFLAGS=-modcacherw")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the S3 test needs versitygw v1.8.0 and could not build it: %v\n%s\nbuild it by hand: GOBIN=%s go install %s && mv %s/versitygw %s (or set PGWARDEN_VERSITYGW to a versitygw binary)",
			err, out, gobin, pkg, gobin, bin)
	}
	must(t, os.Rename(filepath.Join(gobin, "versitygw"), bin))
	t.Logf("built versitygw v1.8.0 in %s into %s", time.Since(start).Round(time.Second), bin)
	return bin
}

// selfSignedTLS makes a CA and a server certificate for localhost and
// 127.0.0.1 signed by it; it returns the CA, certificate and key files.
func selfSignedTLS(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pgwarden test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	must(t, err)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	must(t, err)
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	must(t, err)
	ca, cert, key = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	must(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644))
	must(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), 0o644))
	must(t, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return ca, cert, key
}
