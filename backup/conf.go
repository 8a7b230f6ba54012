package backup

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// Options are one node's pgBackRest settings. The stanza is the cluster's
// scope; Dir is this node's own directory for pgBackRest's configuration,
// log, lock and spool, so that several nodes on one host never share a
// lock (pgBackRest's locks are per lock path, not per repository).
type Options struct {
	Stanza string
	Dir    string
	// PgPath is the data directory; PgSocket the directory of its Unix
	// socket (pgBackRest connects only through it), PgPort its port.
	PgPath     string
	PgSocket   string
	PgPort     int
	PgUser     string
	PgPassword string
	// Repository is a directory; S3 an object store instead.
	Repository string
	S3         *S3
	Compress   string
	ProcessMax int
	// Binary is the pgbackrest program (default "pgbackrest").
	Binary string
}

// S3 is an S3-compatible repository, reached over TLS.
type S3 struct {
	Bucket string
	// Endpoint is host or host:port.
	Endpoint  string
	Region    string
	URIStyle  string // host or path
	Path      string // prefix in the bucket
	Key       string
	Secret    string
	CAFile    string
	VerifyTLS bool
}

// configPath is where render's output is written.
func (o Options) configPath() string { return filepath.Join(o.Dir, "pgbackrest.conf") }

// logPath, lockPath and spoolPath are this node's own directories.
func (o Options) logPath() string   { return filepath.Join(o.Dir, "log") }
func (o Options) lockPath() string  { return filepath.Join(o.Dir, "lock") }
func (o Options) spoolPath() string { return filepath.Join(o.Dir, "spool") }

// neverExpire is repo1-retention-full: pgBackRest expires after every
// backup by itself; retention is pgwarden's, so its own never applies.
const neverExpire = 9999999

// render is the pgBackRest configuration file of this node. It holds the
// S3 secret when there is one: write it mode 0600.
func render(o Options) (string, error) {
	var b strings.Builder
	set := func(k string, v any) {
		fmt.Fprintf(&b, "%s=%v\n", k, v)
	}
	for _, v := range []string{o.Stanza, o.Dir, o.PgPath, o.PgSocket, o.PgUser, o.Repository} {
		if strings.ContainsAny(v, "\n\r") {
			return "", fmt.Errorf("pgbackrest configuration: %q: a newline cannot be written to it", v)
		}
	}
	if o.Stanza == "" || o.Dir == "" || o.PgPath == "" {
		return "", fmt.Errorf("pgbackrest configuration: stanza, directory and data directory are required")
	}
	b.WriteString("# Written by pgwarden at every start: change pgwarden's configuration instead.\n[global]\n")
	set("log-path", o.logPath())
	set("lock-path", o.lockPath())
	set("spool-path", o.spoolPath())
	set("log-level-console", "warn")
	set("log-level-file", "info")
	set("compress-type", orDefault(o.Compress, "lz4"))
	set("process-max", max(o.ProcessMax, 1))
	// A backup asked for now starts now, not at the next checkpoint.
	set("start-fast", "y")
	set("repo1-retention-full", neverExpire)
	if s := o.S3; s != nil {
		host, port, err := splitEndpoint(s.Endpoint)
		if err != nil {
			return "", err
		}
		set("repo1-type", "s3")
		set("repo1-path", orDefault(s.Path, "/pgwarden"))
		set("repo1-s3-bucket", s.Bucket)
		set("repo1-s3-endpoint", host)
		if port != 0 {
			set("repo1-storage-port", port)
		}
		set("repo1-s3-region", s.Region)
		set("repo1-s3-uri-style", orDefault(s.URIStyle, "host"))
		set("repo1-s3-key", s.Key)
		set("repo1-s3-key-secret", s.Secret)
		if s.CAFile != "" {
			set("repo1-storage-ca-file", s.CAFile)
		}
		if !s.VerifyTLS {
			set("repo1-storage-verify-tls", "n")
		}
	} else {
		set("repo1-type", "posix")
		set("repo1-path", o.Repository)
	}
	fmt.Fprintf(&b, "\n[%s]\n", o.Stanza)
	set("pg1-path", o.PgPath)
	if o.PgSocket != "" {
		set("pg1-socket-path", o.PgSocket)
	}
	if o.PgPort != 0 {
		set("pg1-port", o.PgPort)
	}
	if o.PgUser != "" {
		set("pg1-user", o.PgUser)
	}
	return b.String(), nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func splitEndpoint(ep string) (string, int, error) {
	if !strings.Contains(ep, ":") {
		return ep, 0, nil
	}
	h, p, err := net.SplitHostPort(ep)
	if err != nil {
		return "", 0, fmt.Errorf("s3 endpoint %q: %w", ep, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("s3 endpoint %q: port: %w", ep, err)
	}
	return h, n, nil
}

// shellQuote quotes one word for sh (archive_command and restore_command
// are run by a shell).
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ArchiveCommand is archive_command: pgwarden's archive-push (pgwarden is
// the agent's own binary), which hands WAL segments to pgBackRest's
// archive-push and refuses a timeline history file that the repository
// already holds with other content (pgBackRest 2.45 would overwrite it).
func (o Options) ArchiveCommand(pgwarden string) string {
	return fmt.Sprintf("%s archive-push --pgbackrest-config %s --stanza %s %%p",
		shellQuote(pgwarden), shellQuote(o.configPath()), shellQuote(o.Stanza))
}

// RestoreCommand is restore_command: pgBackRest's archive-get.
func (o Options) RestoreCommand() string {
	return fmt.Sprintf(`%s --config=%s --stanza=%s archive-get %%f "%%p"`,
		shellQuote(o.binary()), shellQuote(o.configPath()), shellQuote(o.Stanza))
}

func (o Options) binary() string { return orDefault(o.Binary, "pgbackrest") }

// repositoryName says where the repository is, for people.
func (o Options) repositoryName() string {
	if s := o.S3; s != nil {
		return fmt.Sprintf("s3://%s%s (%s)", s.Bucket, orDefault(s.Path, "/pgwarden"), s.Endpoint)
	}
	return o.Repository
}
