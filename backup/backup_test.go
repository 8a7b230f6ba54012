package backup

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

func TestRender(t *testing.T) {
	base := Options{Stanza: "main", Dir: "/var/lib/pgwarden/node1.pgbackrest", PgPath: "/var/lib/pgwarden/node1",
		PgSocket: "/var/run/postgresql", PgPort: 5433, PgUser: "postgres", Compress: "zst", ProcessMax: 3}
	cases := []struct {
		name string
		edit func(*Options)
		want []string
		not  []string
	}{
		{"posix", func(o *Options) { o.Repository = "/backups" }, []string{
			"[global]\n", "log-path=/var/lib/pgwarden/node1.pgbackrest/log\n", "lock-path=/var/lib/pgwarden/node1.pgbackrest/lock\n",
			"spool-path=/var/lib/pgwarden/node1.pgbackrest/spool\n", "compress-type=zst\n", "process-max=3\n",
			"repo1-retention-full=9999999\n", "repo1-type=posix\n", "repo1-path=/backups\n", "start-fast=y\n",
			"\n[main]\npg1-path=/var/lib/pgwarden/node1\npg1-socket-path=/var/run/postgresql\npg1-port=5433\npg1-user=postgres\n",
		}, []string{"s3"}},
		{"s3 path style with a port and a CA", func(o *Options) {
			o.S3 = &S3{Bucket: "pg", Endpoint: "127.0.0.1:7070", Region: "us-east-1", URIStyle: "path", Key: "AK", Secret: "SK", CAFile: "/ca.pem", VerifyTLS: true}
		}, []string{"repo1-type=s3\n", "repo1-path=/pgwarden\n", "repo1-s3-bucket=pg\n", "repo1-s3-endpoint=127.0.0.1\n",
			"repo1-storage-port=7070\n", "repo1-s3-region=us-east-1\n", "repo1-s3-uri-style=path\n", "repo1-s3-key=AK\n",
			"repo1-s3-key-secret=SK\n", "repo1-storage-ca-file=/ca.pem\n"}, []string{"verify-tls", "repo1-path=/backups"}},
		{"s3 without verification", func(o *Options) {
			o.S3 = &S3{Bucket: "pg", Endpoint: "s3.example", Region: "r", Path: "/x"}
		}, []string{"repo1-s3-endpoint=s3.example\n", "repo1-storage-verify-tls=n\n", "repo1-path=/x\n", "repo1-s3-uri-style=host\n"},
			[]string{"storage-port"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := base
			c.edit(&o)
			got, err := render(o)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("rendered config lacks %q:\n%s", w, got)
				}
			}
			for _, n := range c.not {
				if strings.Contains(got, n) {
					t.Errorf("rendered config has %q:\n%s", n, got)
				}
			}
		})
	}
	bad := base
	bad.PgPath = "/x\nrepo1-path=/elsewhere"
	if _, err := render(bad); err == nil {
		t.Fatal("a newline in a value was written into the config")
	}
}

func TestCommands(t *testing.T) {
	o := Options{Stanza: "main", Dir: "/var/lib/pg warden/n1.pgbackrest"}
	if got, want := o.ArchiveCommand("/usr/bin/pgwarden"), `/usr/bin/pgwarden archive-push --pgbackrest-config '/var/lib/pg warden/n1.pgbackrest/pgbackrest.conf' --stanza main %p`; got != want {
		t.Errorf("archive_command\n got %s\nwant %s", got, want)
	}
	if got, want := o.RestoreCommand(), `pgbackrest --config='/var/lib/pg warden/n1.pgbackrest/pgbackrest.conf' --stanza=main archive-get %f "%p"`; got != want {
		t.Errorf("restore_command\n got %s\nwant %s", got, want)
	}
}

func TestParseInfo(t *testing.T) {
	b, err := os.ReadFile("testdata/info.json")
	if err != nil {
		t.Fatal(err)
	}
	in, err := parseInfo(b, "main")
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Backups) != 1 || in.StatusCode != 0 || in.archiveID() != "15-1" || len(in.DBs) != 1 || in.DBs[0].SystemID != 7714264720917538041 {
		t.Fatalf("info = %+v", in)
	}
	bs := in.Backups[0]
	want := BackupSet{Label: "20261201-092709F", Type: "full", Start: time.Unix(1796117229, 0).UTC(), Stop: time.Unix(1796117232, 0).UTC(),
		Size: 159536806, RepoSize: 91541379, WALStart: "00000001000000000000000E", WALStop: "00000001000000000000000E",
		LSNStart: 0xE000028, LSNStop: 0xE000100, DBID: 1}
	if bs != want {
		t.Fatalf("backup\n got %+v\nwant %+v", bs, want)
	}
	if bs.timeline() != 1 || bs.duration() != 3*time.Second {
		t.Fatalf("timeline %d duration %s", bs.timeline(), bs.duration())
	}
	if _, err := parseInfo(b, "other"); err == nil || !strings.Contains(err.Error(), `no stanza "other"`) {
		t.Fatalf("missing stanza: %v", err)
	}
	if _, err := parseInfo([]byte("ERROR: nope"), "main"); err == nil {
		t.Fatal("garbage parsed")
	}
}

func TestProgressLines(t *testing.T) {
	var p Progress
	lines := []string{
		"2026-12-01 09:27:11.152 P02 DETAIL: backup file /tmp/exp/data/base/5/1255 (768KB, 0.49%) checksum 46f8eb",
		"2026-12-01 09:27:11.152 P00   INFO: backup start archive = 00000001000000000000000E, lsn = 0/E000028",
		"2026-12-01 09:27:11.200 P01 DETAIL: backup file /tmp/exp/data/base/5/16384 (1.5GB, 97.20%) checksum ab",
		"P01 DETAIL: restore file /r/base/1/112 (8KB, 100.00%) checksum 1f",
		"P01 DETAIL: restore file /r/base/1/113 (0B, 100.00%)",
	}
	n := 0
	for _, l := range lines {
		if parseProgress(l, &p) {
			n++
		}
	}
	if want := int64(768<<10 + 1.5*(1<<30) + 8<<10); n != 4 || p.Bytes != want || p.Percent != 100 {
		t.Fatalf("progress %+v from %d lines; want %d bytes, 100%%, 4 lines", p, n, want)
	}
}

func TestSegmentNames(t *testing.T) {
	s, ok := parseSegment("00000003000000010000000A")
	if !ok || s.Timeline != 3 || s.No != 0x10A || s.String() != "00000003000000010000000A" || s.End() != wal.LSN(0x10B*segmentSize) {
		t.Fatalf("segment %+v %v end %s", s, ok, s.End())
	}
	for _, bad := range []string{"", "00000001.history", "0000000100000000000000G1", "000000010000000000000100"} {
		if _, ok := parseSegment(bad); ok {
			t.Errorf("ParseSegment(%q) accepted", bad)
		}
	}
}

// history3 is a timeline 3 that left 1 inside segment 5 and 2 inside 7.
const history3 = "1\t0/5000100\tno recovery target specified\n\n2\t0/70000A0\tno recovery target specified\n"

func TestParseHistory(t *testing.T) {
	h, err := parseHistory(3, history3)
	if err != nil {
		t.Fatal(err)
	}
	want := History{{1, 0, 0x5000100}, {2, 0x5000100, 0x70000A0}, {3, 0x70000A0, 0}}
	if len(h) != 3 || h[0] != want[0] || h[1] != want[1] || h[2] != want[2] {
		t.Fatalf("history %+v", h)
	}
	for seg, tl := range map[uint64]uint32{1: 1, 4: 1, 5: 2, 6: 2, 7: 3, 100: 3} {
		if got := h.timelineOf(seg); got != tl {
			t.Errorf("segment %d read from timeline %d; want %d", seg, got, tl)
		}
	}
	for _, bad := range []string{"x 0/1 r", "1 nolsn r", "2\t0/1\tr\n1\t0/2\tr\n", "3\t0/1\tr\n"} {
		if _, err := parseHistory(3, bad); err == nil {
			t.Errorf("ParseHistory(%q) accepted", bad)
		}
	}
	if h, err := parseHistory(1, ""); err != nil || len(h) != 1 || h.timelineOf(9) != 1 {
		t.Fatalf("timeline 1 without a history: %v %v", h, err)
	}
}

// archive makes an Archive holding the named files.
func archive(names ...string) Archive {
	a := Archive{Segments: map[Segment]time.Time{}, Partial: map[Segment]bool{}, Histories: map[uint32]time.Time{}}
	for i, n := range names {
		at := time.Unix(int64(1000+i), 0).UTC()
		if tl, ok := strings.CutSuffix(n, ".history"); ok {
			s, _ := parseSegment(tl + "0000000000000000")
			a.Histories[s.Timeline] = at
			continue
		}
		s, _ := parseSegment(strings.TrimSuffix(n, ".partial"))
		if strings.HasSuffix(n, ".partial") {
			a.Partial[s] = true
		} else {
			a.Segments[s] = at
		}
	}
	return a
}

func TestWalk(t *testing.T) {
	h, _ := parseHistory(3, history3)
	full := []string{"000000010000000000000003", "000000010000000000000004", "000000010000000000000005.partial",
		"00000002.history", "000000020000000000000005", "000000020000000000000006", "000000020000000000000007.partial",
		"00000003.history", "000000030000000000000007", "000000030000000000000008"}
	cases := []struct {
		name        string
		files       []string
		from        string
		wantLast    string
		wantMissing string
		wantHist    []uint32
	}{
		{"whole line", full, "000000010000000000000003", "000000030000000000000008", "", nil},
		{"from a later backup", full, "000000020000000000000006", "000000030000000000000008", "", nil},
		{"gap before the first failover", without(full, "000000010000000000000004"), "000000010000000000000003",
			"000000010000000000000003", "000000010000000000000004", nil},
		{"only the partial of the switch segment", without(full, "000000020000000000000005"), "000000010000000000000003",
			"000000010000000000000004", "000000020000000000000005", nil},
		{"a history file missing", without(full, "00000002.history"), "000000010000000000000003",
			"000000030000000000000008", "", []uint32{2}},
		{"abandoned branch ignored", append(full, "000000020000000000000009"), "000000010000000000000003",
			"000000030000000000000008", "", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, err := archive(c.files...).WalkFrom(c.from, h)
			if err != nil {
				t.Fatal(err)
			}
			missing := ""
			if w.Missing != nil {
				missing = w.Missing.String()
			}
			if w.Last.String() != c.wantLast || missing != c.wantMissing || !equalU32(w.MissingHistories, c.wantHist) || !w.Reached {
				t.Fatalf("walk: last %s missing %q histories %v; want %s, %q, %v", w.Last, missing, w.MissingHistories, c.wantLast, c.wantMissing, c.wantHist)
			}
			if w.ok() != (c.wantMissing == "" && c.wantHist == nil) {
				t.Fatalf("OK() = %v", w.ok())
			}
		})
	}
	if _, err := archive(full...).WalkFrom("000000040000000000000003", h); err == nil {
		t.Fatal("a start off the history was walked")
	}
}

func without(names []string, drop string) []string {
	var out []string
	for _, n := range names {
		if n != drop {
			out = append(out, n)
		}
	}
	return out
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParseArchive(t *testing.T) {
	js := `{".":{"type":"path"},"0000000100000000":{"type":"path"},
 "0000000100000000/000000010000000000000001-48f091dea8b3eec622763a816affac9d41c75146.lz4":{"type":"file","size":2270630,"time":1796117222},
 "0000000100000000/000000010000000000000002.00000028.backup":{"type":"file","size":300,"time":1796117223},
 "0000000100000000/000000010000000000000003.partial-3ff33e9791eace2160c16ddb7fbb7b46f1f9b56e.lz4":{"type":"file","size":9,"time":1796117225},
 "00000002.history":{"type":"file","size":42,"time":1796117226},
 "0000000200000000/000000020000000000000003-50cd5164c1bce7dd0a06875c0552caf2818d2f43":{"type":"file","size":16777216,"time":1796117227}}`
	a, err := parseArchive([]byte(js), "15-1")
	if err != nil {
		t.Fatal(err)
	}
	s1, _ := parseSegment("000000010000000000000001")
	s3, _ := parseSegment("000000010000000000000003")
	t3, _ := parseSegment("000000020000000000000003")
	if len(a.Segments) != 2 || a.Segments[s1].Unix() != 1796117222 || a.Segments[t3].IsZero() || !a.Partial[s3] ||
		a.Histories[2].Unix() != 1796117226 || a.newestTimeline() != 2 {
		t.Fatalf("archive %+v", a)
	}
}

// TestSource: a dump reaches a member where its conn_url says, read as
// dcs.HostPort reads it, with PostgreSQL's port when none is given.
func TestSource(t *testing.T) {
	cases := []struct {
		url  string
		ok   bool
		host string
		port int
	}{
		{"postgres://replicator@10.0.0.2:5433/postgres", true, "10.0.0.2", 5433},
		{"postgres://db.example/postgres", true, "db.example", 5432},
		{"postgres://[::1]:6543/postgres", true, "::1", 6543},
		{"127.0.0.1:5434", true, "127.0.0.1", 5434},
		{"", false, "", 0},
	}
	for _, c := range cases {
		s, ok := source(dcs.Member{Name: "n", ConnURL: c.url}, true)
		if ok != c.ok || (ok && (s.Host != c.host || s.Port != c.port || s.Member != "n" || !s.Replica)) {
			t.Errorf("source(%q) = %+v, %v; want %s:%d, %v", c.url, s, ok, c.host, c.port, c.ok)
		}
	}
}
