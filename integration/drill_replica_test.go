//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/backup"
	"github.com/pgwarden/pgwarden/integration/harness"
)

// TestDrillOnReplica, in one 2-node cluster: a drill asked for with the
// CLI runs on the replica's host (the recorded outcome names it and its
// scratch directory, which the test sees appear under the replica's paths
// and go); a logical dump from the replica cancelled by a recovery
// conflict is retried once on the primary, and its manifest names the
// primary; with the replica stopped, the drill runs on the leader's host.
// The cluster has postgres.tls: the restored copy keeps the backup's
// hostssl pg_hba, so it must run with ssl on for the drill to log in (it
// waited for its 30-minute timeout before).
func TestDrillOnReplica(t *testing.T) {
	t.Parallel()
	repo := harness.Dir(t, "repo")
	// A standby cancels a conflicting query at once instead of after 30 s
	// (pgExtra continues postgres.parameters).
	c := newCluster(t, clusterOpts{pgTLS: true, nodes: 2, ttl: 5, retry: 2, pgExtra: "    max_standby_streaming_delay: \"0\"\n",
		// A drill scheduled once a year: it never fires here, but its next
		// due time is a metric.
		extra: fmt.Sprintf("backup:\n  repository: %s\n  archive_wal: true\n  timezone: UTC\n  schedule: {drill: '0 0 1 1 *'}\n", repo)})
	p := c.primary(90 * time.Second)
	c.waitReplicas(90*time.Second, p)
	r := c.other(p)
	cfg := p.cfgPath
	must(t, p.exec("CREATE TABLE t (id bigint PRIMARY KEY, v text)"))
	must(t, p.exec("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g"))
	out := pgwarden(t, "backup", "create", "-c", cfg, "--type", "full")
	if labelRe.FindStringSubmatch(out) == nil {
		t.Fatalf("no label in:\n%s", out)
	}

	t.Run("drill on the replica", func(t *testing.T) {
		seen := watchScratch(t, []*node{r, p}, func() {
			out := pgwarden(t, "backup", "drill", "-c", cfg)
			t.Logf("drill: %s", out)
		})
		run := backupsJSON(t, cfg).LastRuns["drill"]
		t.Logf("recorded: member %s, %s in %s: %s", run.Member, okText(run.OK), run.Finished.Sub(run.Started).Round(100*time.Millisecond), run.Details)
		scratch := filepath.Join(r.dir, "data.drill") + string(filepath.Separator) + "pgwarden-drill-"
		if !run.OK || run.Member != r.name || !strings.Contains(run.Details, "on "+r.name+" in "+scratch) {
			t.Fatalf("drill recorded as %+v; want it passed on the replica %s in %s*", run, r.name, scratch)
		}
		if len(seen[r.name]) != 1 || !strings.Contains(run.Details, seen[r.name][0]) || len(seen[p.name]) != 0 {
			t.Fatalf("scratch directories seen during the drill %v; want exactly the recorded one, on %s", seen, r.name)
		}
		if entries, err := os.ReadDir(filepath.Join(r.dir, "data.drill")); err != nil || len(entries) != 0 {
			t.Fatalf("the replica's scratch directory after the drill: %v, %d entries; want it empty", err, len(entries))
		}
		// The yearly drill passed now: it is next due on 1 January.
		want := time.Date(run.Finished.Year()+1, 1, 1, 0, 0, 0, 0, time.UTC)
		line := grepLine(metrics(t, p), `pgwarden_backup_schedule_next_due_timestamp_seconds{name="`+p.name+`",scope="test",type="drill"}`)
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("no next due time of the drill schedule in the metrics (line %q)", line)
		}
		if v, err := strconv.ParseFloat(f[1], 64); err != nil || int64(v) != want.Unix() {
			t.Fatalf("drill next due %s (%v); want %s (%d)", f[1], err, want, want.Unix())
		}
	})

	t.Run("recovery conflict during a dump", func(t *testing.T) {
		recoveryConflict(t, p, r, cfg, repo)
	})

	t.Run("drill on the leader without a replica", func(t *testing.T) {
		must(t, r.agent.Stop(syscall.SIGTERM, 30*time.Second))
		seen := watchScratch(t, []*node{r, p}, func() {
			out := pgwarden(t, "backup", "drill", "-c", cfg)
			t.Logf("drill: %s", out)
		})
		run := backupsJSON(t, cfg).LastRuns["drill"]
		t.Logf("recorded: member %s, %s in %s: %s", run.Member, okText(run.OK), run.Finished.Sub(run.Started).Round(100*time.Millisecond), run.Details)
		if !run.OK || run.Member != p.name || !strings.Contains(run.Details, "on "+p.name+" in "+filepath.Join(p.dir, "data.drill")) {
			t.Fatalf("drill recorded as %+v; want it passed on the leader %s", run, p.name)
		}
		if len(seen[p.name]) != 1 || len(seen[r.name]) != 0 {
			t.Fatalf("scratch directories seen during the drill %v; want one, on %s", seen, p.name)
		}
	})
}

// other is the first node of c that is none of not.
func (c *cluster) other(not ...*node) *node {
	for _, o := range c.nodes {
		if !contains(not, o) {
			return o
		}
	}
	c.t.Fatalf("no node besides %d others", len(not))
	return nil
}

func okText(ok bool) string {
	if ok {
		return "passed"
	}
	return "FAILED"
}

// watchScratch runs f while it watches the drill scratch directories of
// nodes, and returns the entries it saw appear in each.
func watchScratch(t *testing.T, nodes []*node, f func()) map[string][]string {
	t.Helper()
	seen := map[string][]string{}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			for _, n := range nodes {
				entries, _ := os.ReadDir(filepath.Join(n.dir, "data.drill"))
				for _, e := range entries {
					if p := filepath.Join(n.dir, "data.drill", e.Name()); !slices.Contains(seen[n.name], p) {
						seen[n.name] = append(seen[n.name], p)
					}
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	f()
	close(stop)
	<-done // seen is the watcher's until it is done
	return seen
}

// recoveryConflict makes the replica cancel a dump for a recovery
// conflict, deterministically: the replica's replay is paused while the
// primary deletes half of a table and vacuums the dead rows away; the
// dump starts on the replica, and once its pg_dump of that database holds
// a snapshot (which still sees those rows), replay resumes: the vacuum's
// record removes rows the snapshot needs, and with
// max_standby_streaming_delay 0 the replica cancels pg_dump at once. The
// dump is then taken once more on the primary.
func recoveryConflict(t *testing.T, p, r *node, cfg, repo string) {
	const db = "conflictdb"
	must(t, p.exec("CREATE DATABASE "+db))
	dsn := func(n *node) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=superpass dbname=%s sslmode=require", n.pgPort, db)
	}
	began := time.Now()
	must(t, withDSN(dsn(p), func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `CREATE TABLE big (id int, v text) WITH (autovacuum_enabled = off);
			INSERT INTO big SELECT g, md5(g::text) || md5((g+1)::text) FROM generate_series(1, 300000) g`)
		return err
	}))
	var lsn string
	must(t, p.queryRow("SELECT pg_current_wal_lsn()::text", &lsn))
	harness.WaitFor(t, 60*time.Second, "the replica replays the big table", func() (bool, error) {
		var ok bool
		err := r.queryRow(fmt.Sprintf("SELECT pg_last_wal_replay_lsn() >= '%s'", lsn), &ok)
		return ok, err
	})
	t.Logf("big table of 300000 rows on both in %s", time.Since(began).Round(100*time.Millisecond))
	var delay string
	must(t, r.queryRow("SHOW max_standby_streaming_delay", &delay))
	if delay != "0" {
		t.Fatalf("max_standby_streaming_delay on the replica is %s; want 0", delay)
	}
	must(t, r.exec("SELECT pg_wal_replay_pause()"))
	resumed := false
	defer func() {
		if !resumed {
			_ = r.exec("SELECT pg_wal_replay_resume()")
		}
	}()
	must(t, withDSN(dsn(p), func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, "DELETE FROM big WHERE id % 2 = 0")
		if err == nil {
			_, err = conn.Exec(ctx, "VACUUM big")
		}
		return err
	}))

	type cli struct {
		out string
		err error
	}
	res := make(chan cli, 1)
	started := time.Now()
	go func() {
		out, err := pgwardenErr(t, "backup", "create", "-c", cfg, "--type", "logical")
		res <- cli{out, err}
	}()
	harness.WaitFor(t, 60*time.Second, "pg_dump of "+db+" holds a snapshot on the replica", func() (bool, error) {
		n, err := r.queryInt(fmt.Sprintf(`SELECT count(*) FROM pg_stat_activity
			WHERE application_name = 'pg_dump' AND datname = '%s' AND backend_xmin IS NOT NULL`, db))
		return n > 0, fmt.Errorf("%d such backends (%v)", n, err)
	})
	t.Logf("pg_dump of %s on the replica %s after the dump was asked for", db, time.Since(started).Round(10*time.Millisecond))
	must(t, r.exec("SELECT pg_wal_replay_resume()"))
	resumed = true
	var got cli
	select {
	case got = <-res:
	case <-time.After(120 * time.Second):
		t.Fatal("the logical dump did not end within 120 s")
	}
	var conflicts int64
	must(t, r.queryRow(fmt.Sprintf("SELECT confl_snapshot FROM pg_stat_database_conflicts WHERE datname = '%s'", db), &conflicts))
	t.Logf("dump in %s (snapshot conflicts on the replica: %d): %v\n%s", time.Since(started).Round(100*time.Millisecond), conflicts, got.err, got.out)
	if got.err != nil {
		t.Fatalf("logical dump after a recovery conflict: %v\n%s", got.err, got.out)
	}
	run := backupsJSON(t, cfg).LastRuns["logical"]
	m, err := backup.ReadManifest(filepath.Join(repo, "logical", "test", run.Label))
	must(t, err)
	t.Logf("manifest: member %s, from replica %v, retried: %s", m.Member, m.FromReplica, m.Retried)
	if m.Member != p.name || m.FromReplica || !strings.Contains(m.Retried, "recovery conflict") || !strings.Contains(m.Retried, r.name) {
		t.Fatalf("manifest of %s: member %s, from replica %v, retried %q; want the primary %s after a conflict on %s",
			run.Label, m.Member, m.FromReplica, m.Retried, p.name, r.name)
	}
	var dumped bool
	for _, f := range m.Files {
		dumped = dumped || f.Database == db
	}
	if !dumped {
		t.Fatalf("the retried dump has no file of %s: %+v", db, m.Files)
	}
}
