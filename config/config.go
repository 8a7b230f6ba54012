package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is one node's configuration file.
type Config struct {
	Name      string   `yaml:"name"`
	Scope     string   `yaml:"scope"`
	Namespace string   `yaml:"namespace"`
	Etcd      Etcd     `yaml:"etcd"`
	REST      REST     `yaml:"rest"`
	Postgres  Postgres `yaml:"postgres"`
	// Priority orders equally advanced replicas; 0 means never promoted.
	Priority *int    `yaml:"priority"`
	Tags     Tags    `yaml:"tags"`
	Pooler   Pooler  `yaml:"pooler"`
	Hooks    Hooks   `yaml:"hooks"`
	Backup   *Backup `yaml:"backup"`
	// Bootstrap says how the first node creates the cluster.
	Bootstrap Bootstrap `yaml:"bootstrap"`
	Log       Log       `yaml:"log"`
	// Cluster is written to etcd once, when the cluster is first initialized.
	Cluster Dynamic `yaml:"cluster"`
	// Watchdog is the companion process that stops PostgreSQL when the agent
	// stops feeding it.
	Watchdog Watchdog `yaml:"watchdog"`
}

// Etcd says how to reach etcd.
type Etcd struct {
	Endpoints []string `yaml:"endpoints"`
	Username  string   `yaml:"username"`
	Password  string   `yaml:"password"`
	// PasswordFile holds the password instead (see secrets.go).
	PasswordFile string `yaml:"password_file"`
	TLS          *TLS   `yaml:"tls"`
}

// TLS is a client TLS configuration.
type TLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// REST configures the HTTP API.
type REST struct {
	Listen         string      `yaml:"listen"`
	ConnectAddress string      `yaml:"connect_address"`
	Auth           *Credential `yaml:"auth"`
	TLS            *ServerTLS  `yaml:"tls"`
	// MetricsCompat "patroni" also exposes the patroni_* series that
	// dashboards written for Patroni query ("" : pgwarden_* only).
	MetricsCompat string `yaml:"metrics_compat"`
}

// ServerTLS is the REST API's TLS configuration: the server's, and that of
// the clients of the API a node runs (its agent asking peers, the CLI).
type ServerTLS struct {
	// Cert and Key are this member's certificate: served by its API and
	// presented as its client certificate when it calls a peer's.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CA is what peers' and the CLI's calls verify an API's certificate
	// against; the system roots when empty.
	CA string `yaml:"ca"`
	// ClientCA is what the server verifies client certificates against.
	ClientCA     string `yaml:"client_ca"`
	VerifyClient bool   `yaml:"verify_client"`
}

// Credential is a username and password; the password may come from
// PasswordFile or an environment variable instead (see secrets.go).
type Credential struct {
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// Postgres configures the local PostgreSQL server.
type Postgres struct {
	BinDir         string     `yaml:"bin_dir"`
	DataDir        string     `yaml:"data_dir"`
	Listen         string     `yaml:"listen"`
	ConnectAddress string     `yaml:"connect_address"`
	Superuser      Credential `yaml:"superuser"`
	Replication    Credential `yaml:"replication"`
	// Parameters are written as given into the file postgresql.conf includes.
	Parameters  map[string]string `yaml:"parameters"`
	PgHBA       []string          `yaml:"pg_hba"`
	UsePgRewind *bool             `yaml:"use_pg_rewind"`
	UseSlots    *bool             `yaml:"use_slots"`
	// MemberSlotsTTL is how long the replication slot of a member that is
	// gone (its key expired) is kept before it is dropped.
	MemberSlotsTTL Duration `yaml:"member_slots_ttl"`
	// CloneTimeout and RewindTimeout bound building a replica (pg_basebackup
	// or a restore) and pg_rewind: a transfer that hangs is given up and
	// retried (with back-off) instead of keeping the member out for good.
	CloneTimeout  Duration `yaml:"clone_timeout"`
	RewindTimeout Duration `yaml:"rewind_timeout"`
	// CreateReplicaMethods are tried in order to build a new replica:
	// "backup" (restore from the repository) and "basebackup".
	CreateReplicaMethods []string `yaml:"create_replica_methods"`
	// TLS turns ssl on with this certificate and key; replication, the
	// agent's connections and the pooler's then use TLS (see SSLMode).
	TLS *TLS `yaml:"tls"`
}

// Tags are a member's labels; Extra holds any operator-defined ones.
type Tags struct {
	NoFailover    bool              `yaml:"nofailover" json:"nofailover,omitempty"`
	NoLoadBalance bool              `yaml:"noloadbalance" json:"noloadbalance,omitempty"`
	ReplicateFrom string            `yaml:"replicatefrom" json:"replicatefrom,omitempty"`
	Extra         map[string]string `yaml:",inline" json:"-"`
}

// Pooler configures the connection pooler pgwarden keeps pointed at the leader.
type Pooler struct {
	PgBouncer *PgBouncer `yaml:"pgbouncer"`
}

// PgBouncer configures the local PgBouncer.
type PgBouncer struct {
	AdminDSN      string              `yaml:"admin_dsn"`
	DatabasesFile string              `yaml:"databases_file"`
	Databases     map[string]PoolerDB `yaml:"databases"`
	// PauseTimeout bounds PAUSE before falling back to KILL.
	PauseTimeout Duration `yaml:"pause_timeout"`
}

// PoolerDB is one [databases] entry.
type PoolerDB struct {
	DBName string `yaml:"dbname"`
	// Target is "primary" (follows the leader) or "local" (this node).
	Target string `yaml:"target"`
	// User, when set, forces the server login user of this entry.
	User string `yaml:"user"`
	// PoolMode overrides pgbouncer's pool_mode for this entry.
	PoolMode string `yaml:"pool_mode"`
}

// Hooks configures the event command.
type Hooks struct {
	EventCommand string   `yaml:"event_command"`
	Events       []string `yaml:"events"`
	Timeout      Duration `yaml:"timeout"`
}

// Log configures the root logger.
type Log struct {
	Format string `yaml:"format"` // text or json
	Level  string `yaml:"level"`  // trace, debug, info, warn, error
}

// Watchdog configures the companion process that fences PostgreSQL when the
// agent freezes or dies.
type Watchdog struct {
	// Mode is "process" (default), "off", or "required" (refuse to lead
	// without one).
	Mode string `yaml:"mode"`
	// SafetyMargin is how long before the lease could expire the primary
	// must have stopped accepting writes.
	SafetyMargin Duration `yaml:"safety_margin"`
}

// Dynamic is the cluster-wide configuration kept in etcd under config.
type Dynamic struct {
	TTL                   Duration `yaml:"ttl" json:"ttl"`
	LoopWait              Duration `yaml:"loop_wait" json:"loop_wait"`
	RetryTimeout          Duration `yaml:"retry_timeout" json:"retry_timeout"`
	MaximumLagOnFailover  int64    `yaml:"maximum_lag_on_failover" json:"maximum_lag_on_failover"`
	SynchronousMode       bool     `yaml:"synchronous_mode" json:"synchronous_mode"`
	SynchronousModeStrict bool     `yaml:"synchronous_mode_strict" json:"synchronous_mode_strict"`
	SynchronousNodeCount  int      `yaml:"synchronous_node_count" json:"synchronous_node_count"`
	// FailsafeMode keeps the primary through an etcd outage while every
	// member of the last known member list confirms it over REST.
	FailsafeMode bool              `yaml:"failsafe_mode" json:"failsafe_mode"`
	Pause        bool              `yaml:"pause" json:"pause"`
	Parameters   map[string]string `yaml:"parameters" json:"parameters,omitempty"`
}

// Duration is a span of time written in YAML or JSON either as a number of
// seconds (10, 0.5) or as a Go duration string ("10s", "500ms").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Seconds is d in (fractional) seconds.
func (d Duration) Seconds() float64 { return time.Duration(d).Seconds() }

// maxSeconds is the longest duration written as a number: beyond it the
// conversion to nanoseconds would overflow (about 292 years), and no
// setting of pgwarden means anything that long.
const maxSeconds = 1e9

// parseDuration reads "10", "0.5", "10s" or "1m30s".
func parseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		switch {
		case math.IsNaN(f) || math.IsInf(f, 0):
			return 0, fmt.Errorf("%q: not a number of seconds", s)
		case f < 0:
			return 0, fmt.Errorf("%q: must not be negative", s)
		case f > maxSeconds:
			return 0, fmt.Errorf("%q: more than %g seconds", s, float64(maxSeconds))
		}
		return Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: not a number of seconds or a duration like 10s", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q: must not be negative", s)
	}
	return Duration(d), nil
}

// UnmarshalYAML accepts seconds or a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: expected seconds or a duration like 10s", n.Line)
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = v
	return nil
}

// MarshalYAML writes whole seconds as a number, anything else as a string.
func (d Duration) MarshalYAML() (any, error) {
	if time.Duration(d)%time.Second == 0 {
		return int64(time.Duration(d) / time.Second), nil
	}
	return time.Duration(d).String(), nil
}

// MarshalJSON writes seconds as a number, as Patroni-style tools expect.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(d.Seconds(), 'f', -1, 64)), nil
}

// UnmarshalJSON accepts a number of seconds or a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	if strings.HasPrefix(s, `"`) {
		unq, err := strconv.Unquote(s)
		if err != nil {
			return fmt.Errorf("duration %s: %w", s, err)
		}
		s = unq
	}
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Defaults is the configuration before the file is read.
func Defaults() Config {
	t := true
	prio := 100
	return Config{
		Namespace: "/pgwarden",
		Scope:     "main",
		Etcd:      Etcd{Endpoints: []string{"127.0.0.1:2379"}},
		REST:      REST{Listen: "127.0.0.1:8008"},
		Postgres: Postgres{
			BinDir:               "/usr/lib/postgresql/15/bin",
			Listen:               "127.0.0.1:5432",
			Superuser:            Credential{Username: "postgres"},
			Replication:          Credential{Username: "replicator"},
			UsePgRewind:          &t,
			UseSlots:             &t,
			MemberSlotsTTL:       Duration(30 * time.Minute),
			CloneTimeout:         Duration(24 * time.Hour),
			RewindTimeout:        Duration(time.Hour),
			CreateReplicaMethods: []string{"basebackup"},
		},
		Priority:  &prio,
		Bootstrap: Bootstrap{Method: "initdb"},
		Hooks:     Hooks{Timeout: Duration(30 * time.Second)},
		Log:       Log{Format: "text", Level: "info"},
		Cluster:   DefaultDynamic(),
		Watchdog:  Watchdog{Mode: "process", SafetyMargin: Duration(2 * time.Second)},
	}
}

// DefaultDynamic is the dynamic configuration when neither the file nor etcd
// says otherwise.
func DefaultDynamic() Dynamic {
	return Dynamic{
		TTL:                  Duration(10 * time.Second),
		LoopWait:             Duration(time.Second),
		RetryTimeout:         Duration(3 * time.Second),
		MaximumLagOnFailover: 1 << 20,
	}
}

// Load reads, defaults and validates the file at path.
func Load(path string) (*Config, error) { return load(path, (*Config).Validate) }

// LoadControl reads a file for the operator commands: a node's file, or a
// control-only one (scope, namespace, etcd, rest credentials and CA). Only
// those keys are validated; unknown keys are still errors.
func LoadControl(path string) (*Config, error) { return load(path, (*Config).ValidateControl) }

func load(path string, validate func(*Config) error) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	c, err := decode(f)
	if err == nil {
		err = c.finish(validate)
	}
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse reads a configuration from r, applies defaults and validates it. A
// key the schema does not know is an error.
func Parse(r io.Reader) (*Config, error) {
	c, err := decode(r)
	if err != nil {
		return nil, err
	}
	if err := c.finish((*Config).Validate); err != nil {
		return nil, err
	}
	return c, nil
}

// finish resolves the secrets (from their files and variables) and
// validates, reporting every problem of both at once.
func (c *Config) finish(validate func(*Config) error) error {
	p := c.resolveSecrets(secretGetenv)
	if err := validate(c); err != nil {
		var vp Problems
		if !errors.As(err, &vp) {
			return errors.Join(p.err(), err)
		}
		p = append(p, vp...)
	}
	return p.err()
}

// decode reads r over the defaults and fills derived values.
func decode(r io.Reader) (*Config, error) {
	c := Defaults()
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	c.fill()
	return &c, nil
}

// fill derives the values that default to other values.
func (c *Config) fill() {
	if c.REST.ConnectAddress == "" {
		c.REST.ConnectAddress = c.REST.Listen
	}
	if c.Postgres.ConnectAddress == "" {
		c.Postgres.ConnectAddress = c.Postgres.Listen
	}
	if c.Postgres.DataDir == "" && c.Name != "" {
		c.Postgres.DataDir = "/var/lib/pgwarden/" + c.Name
	}
	c.Backup.fill()
	if c.Pooler.PgBouncer != nil && c.Pooler.PgBouncer.PauseTimeout == 0 {
		c.Pooler.PgBouncer.PauseTimeout = Duration(5 * time.Second)
	}
}

// PriorityValue is the configured priority.
func (c *Config) PriorityValue() int {
	if c.Priority == nil {
		return 100
	}
	return *c.Priority
}

// Prefix is the etcd key prefix of this cluster, ending in "/".
func (c *Config) Prefix() string {
	return strings.TrimRight(c.Namespace, "/") + "/" + c.Scope + "/"
}
