package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Problems is every problem found in a configuration, one per line.
type Problems []string

func (p Problems) Error() string { return strings.Join(p, "\n") }

// add records "key: value: rule".
func (p *Problems) add(key string, value any, rule string, args ...any) {
	*p = append(*p, fmt.Sprintf("%s: %s: %s", key, quoteValue(value), fmt.Sprintf(rule, args...)))
}

func quoteValue(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case Duration:
		return time.Duration(x).String()
	default:
		return fmt.Sprint(x)
	}
}

func (p Problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return p
}

var (
	nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	dbRe   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)
)

// managedParameters are set by pgwarden itself; an operator value would
// break replication or the agent's own connection.
var managedParameters = []string{"listen_addresses", "port", "hot_standby", "wal_level", "primary_conninfo",
	"primary_slot_name", "recovery_target_timeline", "hba_file", "wal_log_hints", "restore_command", "promote_trigger_file"}

// KnownEvents are the hook events.
var KnownEvents = []string{"bootstrap", "promote", "demote", "switchover", "failover", "follow", "lost_lock", "fence", "start", "stop",
	"restart", "backup", "backup_failed", "drill", "drill_failed"}

// Validate reports every problem in c at once, each naming the key, the
// value and the rule.
func (c *Config) Validate() error {
	var p Problems
	if c.Name == "" {
		p.add("name", c.Name, "required: this member's unique name")
	} else if !nameRe.MatchString(c.Name) {
		p.add("name", c.Name, "letters, digits, '_', '.' and '-' only")
	}
	c.controlProblems(&p)
	checkHostPort(&p, "rest.listen", c.REST.Listen)
	checkHostPort(&p, "rest.connect_address", c.REST.ConnectAddress)
	if m := c.REST.MetricsCompat; m != "" && m != "patroni" {
		p.add("rest.metrics_compat", m, `must be "patroni" or empty`)
	}
	if t := c.REST.TLS; t != nil {
		checkRESTTLS(&p, t, c.REST.ConnectAddress)
	}
	pg := c.Postgres
	if pg.BinDir != "" {
		if _, err := os.Stat(filepath.Join(pg.BinDir, "pg_ctl")); err != nil {
			p.add("postgres.bin_dir", pg.BinDir, "no pg_ctl there (install postgresql-15 or set bin_dir)")
		}
	}
	if !filepath.IsAbs(pg.DataDir) {
		p.add("postgres.data_dir", pg.DataDir, "must be an absolute path")
	}
	checkHostPort(&p, "postgres.listen", pg.Listen)
	checkHostPort(&p, "postgres.connect_address", pg.ConnectAddress)
	if pg.Superuser.Username == "" {
		p.add("postgres.superuser.username", "", "required")
	}
	if pg.Superuser.Password == "" {
		p.add("postgres.superuser.password", "", "required (or password_file, or %s): the agent connects over TCP with a password", EnvSuperuserPassword)
	}
	if pg.Replication.Username == "" {
		p.add("postgres.replication.username", "", "required")
	}
	if pg.Replication.Password == "" {
		p.add("postgres.replication.password", "", "required (or password_file, or %s): replicas authenticate with it", EnvReplicationPassword)
	}
	if pg.Replication.Username != "" && pg.Replication.Username == pg.Superuser.Username {
		p.add("postgres.replication.username", pg.Replication.Username, "must differ from the superuser")
	}
	for _, k := range slices.Sorted(mapKeys(pg.Parameters)) {
		if slices.Contains(managedParameters, k) {
			p.add("postgres.parameters."+k, pg.Parameters[k], "managed by pgwarden (set postgres.listen or let the agent manage replication)")
		}
	}
	checkSocketDirs(&p, pg.Parameters["unix_socket_directories"], pg.Listen)
	if pg.TLS != nil {
		checkPostgresTLS(&p, pg.TLS, pg)
	}
	if c.Priority != nil && *c.Priority < 0 {
		p.add("priority", *c.Priority, "must be >= 0 (0 = never promoted)")
	}
	if c.Tags.ReplicateFrom == c.Name && c.Name != "" {
		p.add("tags.replicatefrom", c.Tags.ReplicateFrom, "cannot be this member itself")
	}
	if pb := c.Pooler.PgBouncer; pb != nil {
		validatePgBouncer(&p, pb)
	}
	for i, e := range c.Hooks.Events {
		if !slices.Contains(KnownEvents, e) {
			p.add(fmt.Sprintf("hooks.events[%d]", i), e, "unknown event; known: %s", strings.Join(KnownEvents, ", "))
		}
	}
	if c.Hooks.Timeout <= 0 {
		p.add("hooks.timeout", c.Hooks.Timeout, "must be > 0")
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		p.add("log.format", c.Log.Format, "must be text or json")
	}
	if !slices.Contains([]string{"trace", "debug", "info", "warn", "error"}, strings.ToLower(c.Log.Level)) {
		p.add("log.level", c.Log.Level, "must be trace, debug, info, warn or error")
	}
	if !slices.Contains([]string{"process", "required", "off"}, c.Watchdog.Mode) {
		p.add("watchdog.mode", c.Watchdog.Mode, "must be process, required or off")
	}
	if c.Watchdog.SafetyMargin <= 0 || !c.Cluster.leavesMargin(c.Watchdog.SafetyMargin) {
		p.add("watchdog.safety_margin", c.Watchdog.SafetyMargin, "must be > 0 and below cluster.ttl (%s) minus cluster.loop_wait (%s)", c.Cluster.TTL.D(), c.Cluster.LoopWait.D())
	}
	if c.Postgres.CloneTimeout <= 0 {
		p.add("postgres.clone_timeout", c.Postgres.CloneTimeout, "must be > 0: the longest a pg_basebackup or restore of this data may take")
	}
	if c.Postgres.RewindTimeout <= 0 {
		p.add("postgres.rewind_timeout", c.Postgres.RewindTimeout, "must be > 0: the longest a pg_rewind may take")
	}
	if c.Postgres.MemberSlotsTTL < 0 {
		p.add("postgres.member_slots_ttl", c.Postgres.MemberSlotsTTL, "must be >= 0 (0 drops a gone member's slot at once)")
	}
	c.backupProblems(&p)
	p = append(p, c.Cluster.problems("cluster.")...)
	return p.err()
}

// ValidateControl checks what the operator commands need: the cluster
// (scope, namespace), etcd, and the REST credentials and CA. A node's file
// passes it, and so does a control-only file without a name or database
// passwords, for an operator's laptop.
func (c *Config) ValidateControl() error {
	var p Problems
	if c.Name != "" && !nameRe.MatchString(c.Name) {
		p.add("name", c.Name, "letters, digits, '_', '.' and '-' only")
	}
	c.controlProblems(&p)
	if t := c.REST.TLS; t != nil {
		checkFile(&p, "rest.tls.ca", t.CA, false)
		checkFile(&p, "rest.tls.cert", t.Cert, false)
		checkPrivateFile(&p, "rest.tls.key", t.Key, false)
		if (t.Cert == "") != (t.Key == "") {
			p.add("rest.tls.cert", t.Cert, "cert and key go together")
		}
	}
	return p.err()
}

// controlProblems are the problems of the keys every command reads.
func (c *Config) controlProblems(p *Problems) {
	if !nameRe.MatchString(c.Scope) {
		p.add("scope", c.Scope, "required; letters, digits, '_', '.' and '-' only")
	}
	if !strings.HasPrefix(c.Namespace, "/") {
		p.add("namespace", c.Namespace, "must start with /")
	}
	if len(c.Etcd.Endpoints) == 0 {
		p.add("etcd.endpoints", "", "at least one host:port is required")
	}
	for i, e := range c.Etcd.Endpoints {
		hp := e
		for _, s := range []string{"http://", "https://"} {
			hp = strings.TrimPrefix(hp, s)
		}
		if strings.Contains(hp, "/") {
			p.add(fmt.Sprintf("etcd.endpoints[%d]", i), e, "want host:port, http://host:port or https://host:port")
			continue
		}
		checkHostPort(p, fmt.Sprintf("etcd.endpoints[%d]", i), hp)
	}
	if (c.Etcd.Username == "") != (c.Etcd.Password == "") {
		p.add("etcd.username", c.Etcd.Username, "username and password (or password_file, or %s) go together", EnvEtcdPassword)
	}
	if t := c.Etcd.TLS; t != nil {
		checkFile(p, "etcd.tls.ca", t.CA, false)
		checkFile(p, "etcd.tls.cert", t.Cert, false)
		checkPrivateFile(p, "etcd.tls.key", t.Key, false)
		if (t.Cert == "") != (t.Key == "") {
			p.add("etcd.tls.cert", t.Cert, "cert and key go together")
		}
	}
	if a := c.REST.Auth; a != nil && (a.Username == "" || a.Password == "") {
		p.add("rest.auth", a.Username, "username and password (or password_file, or %s) are both required", EnvRESTAuthPassword)
	}
}

func validatePgBouncer(p *Problems, pb *PgBouncer) {
	if pb.AdminDSN == "" {
		p.add("pooler.pgbouncer.admin_dsn", "", "required: a connection string to PgBouncer's admin console")
	}
	if !filepath.IsAbs(pb.DatabasesFile) {
		p.add("pooler.pgbouncer.databases_file", pb.DatabasesFile, "must be an absolute path")
	} else if st, err := os.Stat(filepath.Dir(pb.DatabasesFile)); err != nil || !st.IsDir() {
		p.add("pooler.pgbouncer.databases_file", pb.DatabasesFile, "its directory does not exist")
	}
	if len(pb.Databases) == 0 {
		p.add("pooler.pgbouncer.databases", "", "at least one database is required")
	}
	seen := map[string]string{}
	for _, name := range slices.Sorted(mapKeys(pb.Databases)) {
		db := pb.Databases[name]
		key := "pooler.pgbouncer.databases." + name
		if !dbRe.MatchString(name) || name == "pgbouncer" {
			p.add(key, name, "not a usable PgBouncer database name")
		}
		if prev, ok := seen[strings.ToLower(name)]; ok {
			p.add(key, name, "duplicate pooler database name (same as %q)", prev)
		}
		seen[strings.ToLower(name)] = name
		if db.DBName == "" {
			p.add(key+".dbname", "", "required")
		}
		if db.Target != "primary" && db.Target != "local" {
			p.add(key+".target", db.Target, "must be primary or local")
		}
		if db.PoolMode != "" && !slices.Contains([]string{"session", "transaction", "statement"}, db.PoolMode) {
			p.add(key+".pool_mode", db.PoolMode, "must be session, transaction or statement")
		}
	}
	if pb.PauseTimeout <= 0 {
		p.add("pooler.pgbouncer.pause_timeout", pb.PauseTimeout, "must be > 0")
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func checkHostPort(p *Problems, key, v string) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		p.add(key, v, "want host:port")
		return
	}
	if host == "" {
		p.add(key, v, "host is missing")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		p.add(key, v, "port must be 1-65535")
	}
}

// maxSocketPath is the longest Unix socket path the kernel accepts
// (sun_path is 108 bytes with its NUL). PostgreSQL only says "could not
// create any Unix-domain sockets" at start, long after the config was read.
const maxSocketPath = 107

func checkSocketDirs(p *Problems, dirs, listen string) {
	_, port, err := net.SplitHostPort(listen)
	if err != nil || dirs == "" {
		return
	}
	for d := range strings.SplitSeq(dirs, ",") {
		d = strings.TrimSpace(d)
		if d == "" || strings.HasPrefix(d, "@") {
			continue // abstract namespace: no file path
		}
		if n := len(d + "/.s.PGSQL." + port); n > maxSocketPath {
			p.add("postgres.parameters.unix_socket_directories", d,
				"socket path %s/.s.PGSQL.%s is %d bytes; Unix sockets allow %d (use a shorter directory)", d, port, n, maxSocketPath)
		}
	}
}

func checkFile(p *Problems, key, path string, required bool) {
	if path == "" {
		if required {
			p.add(key, path, "required")
		}
		return
	}
	if _, err := os.Stat(path); err != nil {
		p.add(key, path, "cannot read it: %v", err)
	}
}

// maxTTL bounds cluster.ttl: well above any HA setting (Patroni's default
// is 30 s), far below etcd's refusal of a lease (9e9 s), which would
// otherwise be found only by the leader's next renewal.
const maxTTL = Duration(time.Hour)

// Validate checks the dynamic configuration.
func (d Dynamic) Validate() error { return Problems(d.problems("")).err() }

func (d Dynamic) problems(prefix string) Problems {
	var p Problems
	if d.LoopWait <= 0 {
		p.add(prefix+"loop_wait", d.LoopWait, "must be > 0")
	}
	if d.RetryTimeout <= 0 {
		p.add(prefix+"retry_timeout", d.RetryTimeout, "must be > 0")
	}
	if d.TTL < Duration(2*time.Second) {
		p.add(prefix+"ttl", d.TTL, "must be at least 2s (etcd's minimum lease)")
	} else if d.TTL > maxTTL {
		p.add(prefix+"ttl", d.TTL, "must be at most %s: a dead leader's key would outlive it that long before any failover", maxTTL.D())
	} else if d.TTL <= d.LoopWait+d.RetryTimeout {
		p.add(prefix+"ttl", d.TTL, "ttl too small for loop_wait and retry_timeout: must exceed loop_wait + retry_timeout (%s)", (d.LoopWait + d.RetryTimeout).D())
	}
	if d.MaximumLagOnFailover < 0 {
		p.add(prefix+"maximum_lag_on_failover", d.MaximumLagOnFailover, "must be >= 0")
	}
	if d.SynchronousNodeCount < 0 {
		p.add(prefix+"synchronous_node_count", d.SynchronousNodeCount, "must be >= 1")
	}
	for k, v := range d.Parameters {
		if slices.Contains(managedParameters, k) {
			p.add(prefix+"parameters."+k, v, "managed by pgwarden")
		}
	}
	return p
}

// leavesMargin: a primary renewed every loop_wait is not fenced between
// two renewals (the watchdog strikes at ttl minus the margin after each).
func (d Dynamic) leavesMargin(margin Duration) bool { return margin+d.LoopWait < d.TTL }

// CheckMargin refuses a dynamic configuration whose ttl leaves this node's
// watchdog.safety_margin no room: the watchdog would fence a healthy
// primary between two renewals.
func (d Dynamic) CheckMargin(margin time.Duration) error {
	if d.leavesMargin(Duration(margin)) {
		return nil
	}
	var p Problems
	p.add("ttl", d.TTL, "leaves no room for watchdog.safety_margin (%s): ttl must exceed safety_margin + loop_wait (%s)", margin, (Duration(margin) + d.LoopWait).D())
	return p
}

// ParseDynamic reads the dynamic configuration as stored in etcd (JSON):
// defaults for absent keys, unknown keys rejected, validated.
func ParseDynamic(raw []byte) (Dynamic, error) {
	d := DefaultDynamic()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return Dynamic{}, fmt.Errorf("dynamic configuration: %w", namedKey(raw, err))
	}
	if d.SynchronousNodeCount == 0 {
		d.SynchronousNodeCount = 1
	}
	if err := d.Validate(); err != nil {
		return Dynamic{}, err
	}
	return d, nil
}

// namedKey adds to err, a failed decoding of a dynamic configuration, the
// key whose value was refused: encoding/json names the field only for a
// type mismatch, not for what a field's own decoder refused (a duration of
// "abc"), so each key is decoded alone to find it.
func namedKey(raw []byte, err error) error {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return err
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		one, _ := json.Marshal(map[string]json.RawMessage{k: fields[k]})
		d := DefaultDynamic()
		dec := json.NewDecoder(bytes.NewReader(one))
		dec.DisallowUnknownFields()
		if kerr := dec.Decode(&d); kerr != nil {
			if strings.Contains(kerr.Error(), k) {
				return kerr
			}
			return fmt.Errorf("%s: %w", k, kerr)
		}
	}
	return err
}
