//go:build integration

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// BenchmarkBackup measures, on a database of at least 1 GiB: the throughput
// of `pgwarden backup create --type full` next to a plain
// `pg_basebackup -Ft -z` of the same cluster, the time of a --latest
// restore until the restored server accepts writes, and the archive lag
// (from a commit to its segment in the repository after pg_switch_wal()).
func BenchmarkBackup(b *testing.B) {
	repo := harness.Dir(b, "repo")
	c := newCluster(b, clusterOpts{nodes: 1, ttl: 10, retry: 3,
		extra: fmt.Sprintf("backup:\n  repository: %s\n  archive_wal: true\n", repo)})
	p := c.primary(90 * time.Second)
	cfg := p.cfgPath
	start := time.Now()
	// About 300 bytes a row of hexadecimal text: compressible as real rows
	// are, about 2:1.
	must(b, p.execLong("CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) || md5((g * 31)::text) || "+
		"md5((g * 61)::text) || md5((g * 97)::text) || md5((g * 127)::text) || md5((g * 251)::text) AS pad FROM generate_series(1, 3800000) g"))
	must(b, p.execLong("CHECKPOINT"))
	size, err := p.queryInt("SELECT pg_database_size('postgres')")
	must(b, err)
	say("loaded %s in %.1fs", humanMiB(size), time.Since(start).Seconds())
	if size < 1<<30 {
		b.Fatalf("database is %s; the figures need at least 1 GiB", humanMiB(size))
	}
	mib := float64(size) / (1 << 20)

	start = time.Now()
	out := pgwarden(b, "backup", "create", "-c", cfg, "--type", "full")
	backupSecs := time.Since(start).Seconds()
	say("pgwarden backup create --type full: %.1fs\n%s", backupSecs, lastLines(out, 1))

	dir := harness.Dir(b, "basebackup")
	start = time.Now()
	cmd := exec.Command(filepath.Join(harness.PgBinDir(b), "pg_basebackup"), "-D", filepath.Join(dir, "tar"), "-Ft", "-z",
		"-h", "127.0.0.1", "-p", fmt.Sprint(p.pgPort), "-U", "replicator", "-c", "fast", "-w")
	cmd.Env = append(os.Environ(), "PGPASSWORD=replpass")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("pg_basebackup: %v: %s", err, o)
	}
	baseSecs := time.Since(start).Seconds()
	say("pg_basebackup -Ft -z: %.1fs", baseSecs)
	report(b, "backup_full_throughput", mib/backupSecs, "MiB/s")
	report(b, "pg_basebackup_tar_gz_throughput", mib/baseSecs, "MiB/s")
	report(b, "backup_vs_pg_basebackup_ratio", baseSecs/backupSecs, "x")

	// Archive lag: a commit, pg_switch_wal(), its segment in the repository.
	var lags []float64
	for i := range 5 {
		must(b, p.exec(fmt.Sprintf("INSERT INTO big VALUES (%d, 'lag')", -1-i)))
		committed := time.Now()
		var seg string
		must(b, p.queryRow("SELECT pg_walfile_name(pg_current_wal_lsn())", &seg))
		must(b, p.exec("SELECT pg_switch_wal()"))
		harness.WaitFor(b, 60*time.Second, seg+" in the repository", func() (bool, error) {
			segs, _ := archiveListing(b, repo, "test")
			return segs[seg], nil
		})
		lags = append(lags, time.Since(committed).Seconds())
	}
	report(b, "archive_lag_median", median(lags), "s")
	say("archive lag rounds: %s", fmtSecs(lags))

	data := filepath.Join(harness.Dir(b, "restore"), "data")
	port := harness.Port(b)
	start = time.Now()
	out = pgwarden(b, "backup", "restore", "-c", cfg, "--data-dir", data, "--latest", "--start", "--port", fmt.Sprint(port))
	restoreSecs := time.Since(start).Seconds()
	defer exec.Command(filepath.Join(harness.PgBinDir(b), "pg_ctl"), "stop", "-D", data, "-m", "immediate").Run()
	say("pgwarden backup restore --latest --start: %.1fs\n%s", restoreSecs, lastLines(out, 1))
	report(b, "restore_latest", restoreSecs, "s")
}

func humanMiB(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

// execLong runs one long statement (no 5 s bound).
func (n *node) execLong(sql string) error {
	cmd := exec.Command(filepath.Join(harness.PgBinDir(n.c.t), "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
		"-h", "127.0.0.1", "-p", fmt.Sprint(n.pgPort), "-U", "postgres", "-d", "postgres", "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD=superpass")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", sql[:min(len(sql), 40)], err, out)
	}
	return nil
}
