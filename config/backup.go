package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Backup configures the WAL archive and base backups (pgBackRest; the
// stanza is the scope). Repository and S3 are alternatives.
type Backup struct {
	// Repository is a directory every node reaches (shared storage).
	Repository string `yaml:"repository"`
	S3         *S3    `yaml:"s3"`
	// ArchiveWAL sets archive_command and restore_command on every node.
	ArchiveWAL bool `yaml:"archive_wal"`
	// Compress is pgBackRest's compress-type: none, gz, lz4, zst or bz2.
	Compress string `yaml:"compress"`
	// ProcessMax is how many processes compress and copy in parallel.
	ProcessMax int               `yaml:"process_max"`
	Schedule   map[string]string `yaml:"schedule"`
	Retention  Retention         `yaml:"retention"`
	// Timezone is for schedules and retention buckets ("" = the host's).
	Timezone string `yaml:"timezone"`
}

// S3 is an S3-compatible object store for the repository. pgBackRest
// speaks S3 only over TLS.
type S3 struct {
	Bucket   string `yaml:"bucket"`
	Endpoint string `yaml:"endpoint"` // host or host:port
	Region   string `yaml:"region"`
	// URIStyle is "host" (bucket.endpoint) or "path" (endpoint/bucket).
	URIStyle string `yaml:"uri_style"`
	// Path is the repository's prefix inside the bucket.
	Path       string `yaml:"path"`
	KeyFile    string `yaml:"key_file"`
	SecretFile string `yaml:"secret_file"`
	// CAFile verifies the endpoint's certificate (default: the system's).
	CAFile    string `yaml:"ca_file"`
	VerifyTLS *bool  `yaml:"verify_tls"`
}

// Retention says how many backups of each age to keep.
type Retention struct {
	Daily   int `yaml:"daily"`
	Weekly  int `yaml:"weekly"`
	Monthly int `yaml:"monthly"`
	Yearly  int `yaml:"yearly"`
}

// Bootstrap says how the first node of a new cluster gets its data:
// "initdb" (an empty cluster) or "backup" (restored from the repository,
// from the stanza of Stanza, another cluster's scope).
type Bootstrap struct {
	Method string `yaml:"method"`
	Stanza string `yaml:"stanza"`
	// TargetTime is RFC 3339; empty: recover all archived WAL.
	TargetTime string `yaml:"target_time"`
}

// TargetTimeValue is the parsed target time (zero: none).
func (b Bootstrap) TargetTimeValue() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, b.TargetTime)
	return t
}

// VerifyTLSValue is verify_tls, true unless set false.
func (s *S3) VerifyTLSValue() bool { return s.VerifyTLS == nil || *s.VerifyTLS }

// ScheduleKinds are the keys backup.schedule accepts.
var ScheduleKinds = []string{"full", "diff", "incr", "logical", "drill"}

// CompressTypes are pgBackRest's compress-type values.
var CompressTypes = []string{"none", "gz", "lz4", "zst", "bz2"}

func (b *Backup) fill() {
	if b == nil {
		return
	}
	if b.Compress == "" {
		b.Compress = "lz4"
	}
	if b.ProcessMax == 0 {
		b.ProcessMax = 2
	}
	if s := b.S3; s != nil {
		if s.URIStyle == "" {
			s.URIStyle = "host"
		}
		if s.Path == "" {
			s.Path = "/pgwarden"
		}
	}
}

// backupProblems checks the backup, bootstrap and replica-method settings.
func (c *Config) backupProblems(p *Problems) {
	b := c.Backup
	for i, m := range c.Postgres.CreateReplicaMethods {
		key := fmt.Sprintf("postgres.create_replica_methods[%d]", i)
		switch {
		case m != "backup" && m != "basebackup":
			p.add(key, m, "must be backup or basebackup")
		case m == "backup" && b == nil:
			p.add(key, m, "needs a backup section (the repository to restore from)")
		}
	}
	if len(c.Postgres.CreateReplicaMethods) == 0 {
		p.add("postgres.create_replica_methods", "", "at least one of backup, basebackup")
	}
	switch bs := c.Bootstrap; bs.Method {
	case "initdb":
		if bs.Stanza != "" || bs.TargetTime != "" {
			p.add("bootstrap.method", bs.Method, "stanza and target_time apply only to method backup")
		}
	case "backup":
		if b == nil {
			p.add("bootstrap.method", bs.Method, "needs a backup section (the repository to restore from)")
		}
		if !nameRe.MatchString(bs.Stanza) {
			p.add("bootstrap.stanza", bs.Stanza, "required with method backup: the source cluster's scope")
		}
		if bs.TargetTime != "" {
			if _, err := time.Parse(time.RFC3339Nano, bs.TargetTime); err != nil {
				p.add("bootstrap.target_time", bs.TargetTime, "want RFC 3339 with a zone, like 2026-11-23T03:00:00Z")
			}
		}
	default:
		p.add("bootstrap.method", bs.Method, "must be initdb or backup")
	}
	if b == nil {
		return
	}
	switch {
	case b.S3 != nil && b.Repository != "":
		p.add("backup.repository", b.Repository, "give either repository (a directory) or s3, not both")
	case b.S3 != nil:
		s3Problems(p, b.S3)
	case b.Repository == "":
		p.add("backup.repository", "", "required: a directory every node reaches, or an s3 section")
	default:
		checkWritableDir(p, "backup.repository", b.Repository)
	}
	if !slices.Contains(CompressTypes, b.Compress) {
		p.add("backup.compress", b.Compress, "must be one of %s", strings.Join(CompressTypes, ", "))
	}
	if b.ProcessMax < 1 || b.ProcessMax > 64 {
		p.add("backup.process_max", b.ProcessMax, "must be 1-64")
	}
	for _, k := range slices.Sorted(mapKeys(b.Schedule)) {
		if !slices.Contains(ScheduleKinds, k) {
			p.add("backup.schedule."+k, b.Schedule[k], "unknown kind; known: %s", strings.Join(ScheduleKinds, ", "))
			continue
		}
		if _, err := ParseCron(b.Schedule[k]); err != nil {
			p.add("backup.schedule."+k, b.Schedule[k], "%v", err)
		}
	}
	for key, n := range map[string]int{"daily": b.Retention.Daily, "weekly": b.Retention.Weekly,
		"monthly": b.Retention.Monthly, "yearly": b.Retention.Yearly} {
		if n < 0 {
			p.add("backup.retention."+key, n, "must be >= 0")
		}
	}
	if b.Timezone != "" {
		if _, err := time.LoadLocation(b.Timezone); err != nil {
			p.add("backup.timezone", b.Timezone, "unknown time zone (want an IANA name like Europe/Paris or UTC)")
		}
	}
	if b.ArchiveWAL {
		for _, k := range []string{"archive_mode", "archive_command", "archive_library"} {
			if v, ok := c.Postgres.Parameters[k]; ok {
				p.add("postgres.parameters."+k, v, "managed by pgwarden when backup.archive_wal is on")
			}
		}
	}
	// pgBackRest reaches PostgreSQL over its Unix socket only.
	if d, ok := c.Postgres.Parameters["unix_socket_directories"]; ok && strings.TrimSpace(d) == "" {
		p.add("postgres.parameters.unix_socket_directories", d, "backup needs a Unix socket directory (pgBackRest connects through it)")
	}
}

func s3Problems(p *Problems, s *S3) {
	if s.Bucket == "" {
		p.add("backup.s3.bucket", "", "required")
	}
	if s.Endpoint == "" {
		p.add("backup.s3.endpoint", "", "required: host or host:port of the object store (TLS)")
	} else if strings.Contains(s.Endpoint, "://") {
		p.add("backup.s3.endpoint", s.Endpoint, "host or host:port without a scheme (pgBackRest speaks S3 over TLS only)")
	}
	if s.Region == "" {
		p.add("backup.s3.region", "", "required (any name the store accepts, e.g. us-east-1)")
	}
	if s.URIStyle != "host" && s.URIStyle != "path" {
		p.add("backup.s3.uri_style", s.URIStyle, "must be host or path")
	}
	if !strings.HasPrefix(s.Path, "/") {
		p.add("backup.s3.path", s.Path, "must start with /")
	}
	checkPrivateFile(p, "backup.s3.key_file", s.KeyFile, true)
	checkPrivateFile(p, "backup.s3.secret_file", s.SecretFile, true)
	checkFile(p, "backup.s3.ca_file", s.CAFile, false)
}

// checkWritableDir: path is an absolute directory this process may write
// (the agent's user creates the archive and backups in it).
func checkWritableDir(p *Problems, key, path string) {
	if !filepath.IsAbs(path) {
		p.add(key, path, "must be an absolute path")
		return
	}
	st, err := os.Stat(path)
	switch {
	case err != nil:
		p.add(key, path, "cannot use it: %v", err)
	case !st.IsDir():
		p.add(key, path, "not a directory")
	case syscall.Access(path, 0x2|0x1) != nil: // W_OK|X_OK
		p.add(key, path, "not writable by this user (uid %d): the agent stores WAL and backups there", os.Geteuid())
	}
}
