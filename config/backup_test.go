package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// withBackup is base(t) plus a backup section on a fresh repository
// directory and the given extra lines.
func withBackup(t *testing.T, backup string) string {
	repo := t.TempDir()
	return base(t) + fmt.Sprintf("backup:\n  repository: %s\n  archive_wal: true\n%s", repo, backup)
}

func TestBackupDefaults(t *testing.T) {
	c, err := parse(withBackup(t, "  schedule: {full: '0 1 * * 0', diff: '0 1 * * 1-6'}\n"))
	if err != nil {
		t.Fatalf("valid backup config refused: %v", err)
	}
	if b := c.Backup; b.Compress != "lz4" || b.ProcessMax != 2 || !b.ArchiveWAL {
		t.Fatalf("backup defaults: %+v", b)
	}
	if c.Bootstrap.Method != "initdb" || len(c.Postgres.CreateReplicaMethods) != 1 || c.Postgres.CreateReplicaMethods[0] != "basebackup" {
		t.Fatalf("bootstrap %+v, replica methods %v", c.Bootstrap, c.Postgres.CreateReplicaMethods)
	}
}

func TestBadBackupConfigs(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	must(t, os.WriteFile(key, []byte("k"), 0o600))
	readonly := filepath.Join(dir, "ro")
	must(t, os.Mkdir(readonly, 0o500))
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"missing repository", "backup:\n  repository: /nonexistent/repo\n", []string{"backup.repository", `"/nonexistent/repo"`, "no such file"}},
		{"relative repository", "backup:\n  repository: repo\n", []string{"backup.repository", "absolute"}},
		{"no repository at all", "backup:\n  archive_wal: true\n", []string{"backup.repository", "required"}},
		{"s3 without bucket", fmt.Sprintf("backup:\n  s3: {endpoint: 127.0.0.1:9000, region: us-east-1, key_file: %[1]s, secret_file: %[1]s}\n", key),
			[]string{"backup.s3.bucket", "required"}},
		{"s3 endpoint with scheme", fmt.Sprintf("backup:\n  s3: {bucket: b, endpoint: 'https://h', region: r, key_file: %[1]s, secret_file: %[1]s}\n", key),
			[]string{"backup.s3.endpoint", "without a scheme"}},
		{"s3 bad uri style", fmt.Sprintf("backup:\n  s3: {bucket: b, endpoint: h, region: r, uri_style: weird, key_file: %[1]s, secret_file: %[1]s}\n", key),
			[]string{"backup.s3.uri_style", `"weird"`}},
		{"s3 secret file missing", fmt.Sprintf("backup:\n  s3: {bucket: b, endpoint: h, region: r, key_file: %[1]s, secret_file: /nonexistent}\n", key),
			[]string{"backup.s3.secret_file", "cannot read"}},
		{"bad cron", "backup:\n  repository: " + dir + "\n  schedule: {full: '0 25 * * *'}\n", []string{"backup.schedule.full", `"0 25 * * *"`, "hour field", "above maximum (23)"}},
		{"cron with 6 fields", "backup:\n  repository: " + dir + "\n  schedule: {diff: '0 0 1 * * *'}\n", []string{"backup.schedule.diff", "want 5 fields"}},
		{"negative retention", "backup:\n  repository: " + dir + "\n  retention: {daily: 7, weekly: -1}\n", []string{"backup.retention.weekly", "-1", "must be >= 0"}},
		{"drill cron garbage", "backup:\n  repository: " + dir + "\n  schedule: {drill: 'every sunday'}\n", []string{"backup.schedule.drill", `"every sunday"`, "want 5 fields"}},
		{"unknown schedule kind", "backup:\n  repository: " + dir + "\n  schedule: {hourly: '0 * * * *'}\n", []string{"backup.schedule.hourly", "unknown kind"}},
		{"bad compress", "backup:\n  repository: " + dir + "\n  compress: rar\n", []string{"backup.compress", `"rar"`}},
		{"bad timezone", "backup:\n  repository: " + dir + "\n  timezone: Mars/Olympus\n", []string{"backup.timezone", "unknown time zone"}},
		{"archive_command set by hand", "backup:\n  repository: " + dir + "\n  archive_wal: true\n", []string{"postgres.parameters.archive_command", "managed by pgwarden"}},
		{"bootstrap from backup without backup", "bootstrap: {method: backup, stanza: old}\n", []string{"bootstrap.method", "needs a backup section"}},
		{"bootstrap from backup without stanza", "backup:\n  repository: " + dir + "\nbootstrap: {method: backup}\n", []string{"bootstrap.stanza", "required"}},
		{"bootstrap bad target", "backup:\n  repository: " + dir + "\nbootstrap: {method: backup, stanza: old, target_time: yesterday}\n", []string{"bootstrap.target_time", `"yesterday"`, "RFC 3339"}},
		{"unknown bootstrap method", "bootstrap: {method: clone}\n", []string{"bootstrap.method", `"clone"`}},
		{"replica from backup without backup", "", []string{"postgres.create_replica_methods[0]", "needs a backup section"}},
	}
	if os.Geteuid() != 0 { // root may write anywhere
		cases = append(cases, struct {
			name, yaml string
			want       []string
		}{"repository not writable", "backup:\n  repository: " + readonly + "\n", []string{"backup.repository", "not writable"}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := base(t) + c.yaml
			switch c.name {
			case "archive_command set by hand":
				s = strings.Replace(s, "parameters: {work_mem: 64MB}", "parameters: {archive_command: /bin/true}", 1)
			case "replica from backup without backup":
				s = strings.Replace(s, "  parameters: {work_mem: 64MB}", "  parameters: {work_mem: 64MB}\n  create_replica_methods: [backup, basebackup]", 1)
			}
			_, err := parse(s)
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

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCronNext(t *testing.T) {
	utc := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse("2006-01-02 15:04 Mon", s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct{ expr, from, want string }{
		{"0 1 * * 0", "2026-11-23 12:00 Mon", "2026-11-29 01:00 Sun"},
		{"0 1 * * 1-6", "2026-11-28 01:00 Sat", "2026-11-30 01:00 Mon"},
		{"*/15 * * * *", "2026-11-23 12:07 Mon", "2026-11-23 12:15 Mon"},
		{"30 2 1 * *", "2026-11-23 12:00 Mon", "2026-12-01 02:30 Tue"},
		{"0 4 * * SUN", "2026-11-23 12:00 Mon", "2026-11-29 04:00 Sun"},
		{"0 0 29 2 *", "2026-03-01 00:00 Sun", "2028-02-29 00:00 Tue"},
		{"* * * * *", "2026-11-23 12:07 Mon", "2026-11-23 12:08 Mon"},
		{"0 0 13 * 5", "2026-11-23 12:00 Mon", "2026-11-27 00:00 Fri"}, // either day field
	}
	for _, c := range cases {
		cr, err := ParseCron(c.expr)
		if err != nil {
			t.Fatalf("%q: %v", c.expr, err)
		}
		if got := cr.Next(utc(c.from)).Format("2006-01-02 15:04 Mon"); got != c.want {
			t.Errorf("%q after %s = %s; want %s", c.expr, c.from, got, c.want)
		}
	}
	for _, bad := range []string{"", "* * * *", "60 * * * *", "a * * * *", "5-1 * * * *", "*/0 * * * *", "0 0 0 * *", "@daily", "@every 1m", "TZ=UTC 0 1 * * *", "0 4 * * 7"} {
		if _, err := ParseCron(bad); err == nil {
			t.Errorf("ParseCron(%q) accepted", bad)
		}
	}
}
