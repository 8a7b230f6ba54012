package backup

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/postgres"

	"github.com/pgwarden/pgwarden/internal/atomicfile"
)

// dumpSource is a PostgreSQL server a logical dump can be taken from.
type dumpSource struct {
	Member  string
	Host    string
	Port    int
	Replica bool
}

// Login is who the dump tools connect as.
type Login struct {
	User, Password string
}

// Manifest describes one complete logical dump. It is written last, into a
// directory that is renamed into place only once every file and the
// manifest are on disk: a dump without a manifest is not a dump.
type Manifest struct {
	Stamp         string    `json:"stamp"`
	Scope         string    `json:"scope"`
	Started       time.Time `json:"started"`
	Finished      time.Time `json:"finished"`
	Member        string    `json:"member"`
	FromReplica   bool      `json:"from_replica"`
	ServerVersion string    `json:"server_version"`
	// LSN is where the source was (replayed, on a replica) when the dump
	// began.
	LSN   string     `json:"lsn"`
	Files []DumpFile `json:"files"`
	// Retried says why the dump was taken again on the primary.
	Retried string `json:"retried,omitempty"`
}

// DumpFile is one file of a dump: the globals (roles, tablespaces; with
// password hashes) or one database in pg_dump's custom format.
type DumpFile struct {
	Name     string `json:"name"`
	Database string `json:"database,omitempty"`
	Globals  bool   `json:"globals,omitempty"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"`
}

// Size is the dump's total size.
func (m Manifest) Size() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// manifestName is the manifest's file name in a dump's directory.
const manifestName = "manifest.json"

// stampFormat names a dump's directory: its start, in UTC.
const stampFormat = "20060102T150405Z"

// Dumper takes logical dumps of a cluster into Root
// (<repository>/logical/<scope>) with pg_dump and pg_dumpall from BinDir.
type Dumper struct {
	BinDir string
	Root   string
	Scope  string
	Login  Login
	Log    hclog.Logger
}

// errRecoveryConflict: the replica cancelled the dump to replay WAL.
var errRecoveryConflict = errors.New("cancelled by a recovery conflict on the replica")

// dump takes a dump from the first source (a healthy replica, best first;
// the primary last) and, if a replica cancels it for a recovery conflict,
// once more from the last source, the primary.
func (d *Dumper) dump(ctx context.Context, sources []dumpSource, now time.Time) (Manifest, error) {
	if len(sources) == 0 {
		return Manifest{}, errors.New("logical dump: no running member to dump from")
	}
	m, err := d.dumpFrom(ctx, sources[0], now, "")
	if errors.Is(err, errRecoveryConflict) && len(sources) > 1 && !sources[len(sources)-1].Replica {
		primary := sources[len(sources)-1]
		d.Log.Warn("logical dump cancelled on the replica by a recovery conflict: retrying on the primary",
			"source", sources[0].Member, "primary", primary.Member, "error", err)
		why := fmt.Sprintf("the dump from %s was cancelled by a recovery conflict: %v", sources[0].Member, err)
		m, err = d.dumpFrom(ctx, primary, now.Add(time.Second), why)
	}
	return m, err
}

func (d *Dumper) dumpFrom(ctx context.Context, src dumpSource, now time.Time, retried string) (Manifest, error) {
	m := Manifest{Stamp: now.UTC().Format(stampFormat), Scope: d.Scope, Started: now.UTC(), Member: src.Member, FromReplica: src.Replica, Retried: retried}
	if err := os.MkdirAll(d.Root, 0o700); err != nil {
		return m, fmt.Errorf("logical dump: %w", err)
	}
	final := filepath.Join(d.Root, m.Stamp)
	if _, err := os.Stat(final); err == nil {
		return m, fmt.Errorf("logical dump: %s exists already", final)
	}
	tmp, err := os.MkdirTemp(d.Root, ".partial-"+m.Stamp+"-")
	if err != nil {
		return m, fmt.Errorf("logical dump: %w", err)
	}
	defer os.RemoveAll(tmp) // gone once renamed; what is left of a failure
	dbs, err := d.describe(ctx, src, &m)
	if err != nil {
		return m, err
	}
	d.Log.Info("logical dump starting", "source", src.Member, "replica", src.Replica, "databases", len(dbs), "lsn", m.LSN)
	globals := DumpFile{Name: "globals.sql", Globals: true}
	if err := d.tool(ctx, src, "pg_dumpall", "--globals-only", "--file="+filepath.Join(tmp, globals.Name), "--database=postgres"); err != nil {
		return m, fmt.Errorf("logical dump of the globals from %s: %w", src.Member, err)
	}
	files := []DumpFile{globals}
	for i, db := range dbs {
		f := DumpFile{Name: fmt.Sprintf("%03d-%s.dump", i+1, fileSafe(db)), Database: db}
		if err := d.tool(ctx, src, "pg_dump", "--format=custom", "--file="+filepath.Join(tmp, f.Name), "--dbname="+db); err != nil {
			return m, fmt.Errorf("logical dump of database %s from %s: %w", db, src.Member, err)
		}
		files = append(files, f)
	}
	for i := range files {
		if err := sealFile(filepath.Join(tmp, files[i].Name), &files[i]); err != nil {
			return m, fmt.Errorf("logical dump: %w", err)
		}
	}
	m.Files = files
	m.Finished = time.Now().UTC()
	if err := writeManifest(tmp, m); err != nil {
		return m, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return m, fmt.Errorf("logical dump: put %s in place: %w", final, err)
	}
	if err := atomicfile.SyncDir(d.Root); err != nil {
		return m, fmt.Errorf("logical dump: %w", err)
	}
	return m, nil
}

// describe lists the databases to dump (all but templates) and fills the
// server's version and WAL position into m.
func (d *Dumper) describe(ctx context.Context, src dumpSource, m *Manifest) ([]string, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cc, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=postgres sslmode=prefer connect_timeout=5", src.Host, src.Port))
	if err != nil {
		return nil, err
	}
	cc.User, cc.Password = d.Login.User, d.Login.Password
	conn, err := pgx.ConnectConfig(cctx, cc)
	if err != nil {
		return nil, fmt.Errorf("logical dump: connect to %s: %w", src.Member, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	m.ServerVersion, m.LSN, err = postgres.VersionAndPosition(cctx, conn)
	if err != nil {
		return nil, fmt.Errorf("logical dump: read %s's version and position: %w", src.Member, err)
	}
	dbs, err := postgres.Databases(cctx, conn)
	if err != nil {
		return nil, fmt.Errorf("logical dump: list %s's databases: %w", src.Member, err)
	}
	return dbs, nil
}

// recoveryConflict is what a replica says when it cancels a query to
// replay WAL.
var recoveryConflict = regexp.MustCompile(`conflict with recovery|canceling statement due to conflict`)

// tool runs pg_dump or pg_dumpall against src. What it writes is in a
// 0700 directory until sealFile makes it 0600: the globals hold password
// hashes.
func (d *Dumper) tool(ctx context.Context, src dumpSource, name string, args ...string) error {
	args = append([]string{fmt.Sprintf("--host=%s", src.Host), fmt.Sprintf("--port=%d", src.Port), "--username=" + d.Login.User, "--no-password"}, args...)
	out, err := runTool(ctx, filepath.Join(d.BinDir, name), args, loginEnv(d.Login), d.Log)
	if err != nil && recoveryConflict.MatchString(out) {
		return fmt.Errorf("%w: %s", errRecoveryConflict, lastLines(out, 3))
	}
	return err
}

func loginEnv(l Login) []string {
	return []string{"PGPASSWORD=" + l.Password, "PGCONNECT_TIMEOUT=10"}
}

// runTool runs a PostgreSQL client program, its output logged and
// returned; cancelled with SIGTERM.
func runTool(ctx context.Context, path string, args, env []string, log hclog.Logger) (string, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Env = append(append(os.Environ(), "LC_ALL=C"), env...)
	out, err := cmd.CombinedOutput()
	text := string(out)
	for l := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		if l != "" {
			log.Debug(filepath.Base(path), "output", l)
		}
	}
	if err != nil {
		return text, fmt.Errorf("%s: %v: %s", filepath.Base(path), err, lastLines(text, 3))
	}
	return text, nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(l[max(0, len(l)-n):], " | ")
}

// fileSafe is a database name as part of a file name.
func fileSafe(db string) string {
	return url.PathEscape(strings.ReplaceAll(db, "/", "%2F"))
}

// sealFile fsyncs a dump file, makes it 0600 and records its size and
// SHA-256.
func sealFile(path string, f *DumpFile) error {
	sum, n, err := sha256File(path)
	if err != nil {
		return fmt.Errorf("checksum %s: %w", path, err)
	}
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer fh.Close()
	if err := fh.Chmod(0o600); err != nil {
		return err
	}
	if err := fh.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	f.Size, f.SHA256 = n, sum
	return nil
}

func writeManifest(dir string, m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, manifestName), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write the dump's manifest: %w", err)
	}
	return nil
}

// Dumps lists the complete dumps under root, oldest first: directories
// with a manifest that parses. Partial ones (a dump that died) are not
// listed.
func Dumps(root string) ([]Manifest, error) {
	entries, err := os.ReadDir(root)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list logical dumps: %w", err)
	}
	var out []Manifest
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		m, err := ReadManifest(filepath.Join(root, e.Name()))
		if err != nil {
			continue
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Manifest) int { return a.Started.Compare(b.Started) })
	return out, nil
}

// ReadManifest reads the manifest of the dump in dir.
func ReadManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		return m, fmt.Errorf("dump %s: %w", filepath.Base(dir), err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("dump %s: manifest: %w", filepath.Base(dir), err)
	}
	return m, nil
}

// sources orders the members a dump can be taken from: streaming replicas
// that run, least behind first, then the leader's primary.
func sources(c *dcs.Cluster) []dumpSource {
	var out []dumpSource
	for _, m := range healthyReplicas(c) {
		if s, ok := source(m, true); ok {
			out = append(out, s)
		}
	}
	if c.Leader != nil {
		if m := c.Member(c.Leader.Name); m != nil {
			if s, ok := source(*m, false); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// healthyReplicas are the streaming replicas that run and are not tagged
// nobackup, least behind first: where dumps and drills go first.
func healthyReplicas(c *dcs.Cluster) []dcs.Member {
	var replicas []dcs.Member
	for _, m := range c.Members {
		if m.Role == "replica" && m.State == "running" && m.Streaming && m.Tags["nobackup"] != "true" {
			replicas = append(replicas, m)
		}
	}
	slices.SortStableFunc(replicas, func(a, b dcs.Member) int { return cmp.Compare(b.ReplayedLSN, a.ReplayedLSN) })
	return replicas
}

// source is where pg_dump reaches m: its conn_url's host and port, read as
// everyone reads a conn_url (dcs.HostPort); without a port, PostgreSQL's.
func source(m dcs.Member, replica bool) (dumpSource, bool) {
	host, port := dcs.HostPort(m.ConnURL)
	if host == "" {
		return dumpSource{}, false
	}
	if port == 0 {
		port = 5432
	}
	return dumpSource{Member: m.Name, Host: host, Port: port, Replica: replica}, true
}
