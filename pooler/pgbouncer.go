package pooler

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgwarden/pgwarden/config"

	"github.com/pgwarden/pgwarden/internal/atomicfile"
)

// noLeaderHost is where "primary" entries point while there is no leader:
// a Unix socket directory that does not exist, so no write reaches a
// demoted node, and SHOW DATABASES says plainly why.
const noLeaderHost = "/pgwarden-no-leader"

// PgBouncer is the local PgBouncer as pgwarden drives it.
type PgBouncer struct {
	cfg   config.PgBouncer
	local string
	// serverSSLMode is what the servers demand of PgBouncer's connections
	// (postgres.tls; "" when they take plain TCP).
	serverSSLMode string
	log           hclog.Logger

	// write serializes writing the databases file and reloading: the
	// loop repointing and SIGHUP replacing the databases.
	write sync.Mutex

	mu     sync.Mutex
	leader string
	// tlsProblem is why PgBouncer's server logins fail under postgres.tls
	// ("" when they do not), found at the last repoint.
	tlsProblem string
	written    string
	state      string
	paused     bool
}

// New checks the configuration (the databases file must be writable) but
// does not connect: PgBouncer may start after the agent. serverTLS is
// postgres.tls (nil without), which PgBouncer's pgbouncer.ini must match.
func New(cfg config.PgBouncer, local string, serverTLS *config.TLS, log hclog.Logger) (*PgBouncer, error) {
	if cfg.AdminDSN == "" {
		return nil, errors.New("pooler.pgbouncer.admin_dsn: required")
	}
	if _, err := pgconn.ParseConfig(cfg.AdminDSN); err != nil {
		return nil, fmt.Errorf("pooler.pgbouncer.admin_dsn: %w", err)
	}
	if _, _, err := net.SplitHostPort(local); err != nil {
		return nil, fmt.Errorf("pooler: local address %q: %w", local, err)
	}
	dir := filepath.Dir(cfg.DatabasesFile)
	f, err := os.CreateTemp(dir, ".pgwarden-check-")
	if err != nil {
		return nil, fmt.Errorf("pooler.pgbouncer.databases_file %s: directory not writable: %w", cfg.DatabasesFile, err)
	}
	f.Close()
	os.Remove(f.Name())
	if len(cfg.Databases) == 0 {
		return nil, errors.New("pooler.pgbouncer.databases: at least one database is required")
	}
	if cfg.PauseTimeout <= 0 {
		cfg.PauseTimeout = config.Duration(5 * time.Second)
	}
	return &PgBouncer{cfg: cfg, local: local, serverSSLMode: config.SSLMode(serverTLS), log: log, state: "unknown"}, nil
}

// databases is the managed databases now (SetDatabases replaces the map,
// never changes it).
func (p *PgBouncer) databases() map[string]config.PoolerDB {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.Databases
}

// SetDatabases replaces the managed databases (SIGHUP) and, once the file
// has been written, writes it again for the same leader and reloads
// PgBouncer.
func (p *PgBouncer) SetDatabases(ctx context.Context, dbs map[string]config.PoolerDB) error {
	if len(dbs) == 0 {
		return errors.New("pooler.pgbouncer.databases: at least one database is required")
	}
	p.write.Lock()
	defer p.write.Unlock()
	p.mu.Lock()
	p.cfg.Databases = maps.Clone(dbs)
	written, leader := p.written != "", p.leader
	p.mu.Unlock()
	if !written {
		return nil // the loop writes it at its first leader
	}
	err := p.repoint(ctx, leader)
	p.setState(err)
	return err
}

// names returns the managed databases with the given target ("" for all),
// sorted.
func (p *PgBouncer) names(target string) []string { return namesOf(p.databases(), target) }

func namesOf(dbs map[string]config.PoolerDB, target string) []string {
	var out []string
	for n, db := range dbs {
		if target == "" || db.Target == target {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// target is host and port of one database for the given leader.
func (p *PgBouncer) target(db config.PoolerDB, leader string) (string, string) {
	addr := p.local
	if db.Target == "primary" {
		if leader == "" {
			return noLeaderHost, "5432"
		}
		addr = leader
	}
	h, port, _ := net.SplitHostPort(addr)
	return h, port
}

// render is the whole databases file, [databases] header included.
func (p *PgBouncer) render(leader string) string {
	var b strings.Builder
	b.WriteString("; Managed by pgwarden: rewritten whole whenever the leader changes.\n[databases]\n")
	dbs := p.databases()
	for _, name := range namesOf(dbs, "") {
		db := dbs[name]
		h, port := p.target(db, leader)
		fmt.Fprintf(&b, "%s = host=%s port=%s dbname=%s", name, h, port, db.DBName)
		if db.User != "" {
			fmt.Fprintf(&b, " user=%s", db.User)
		}
		if db.PoolMode != "" {
			fmt.Fprintf(&b, " pool_mode=%s", db.PoolMode)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (p *PgBouncer) setState(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err != nil:
		p.state = "error: " + err.Error()
	case p.tlsProblem != "":
		p.state = "error: " + p.tlsProblem
	case p.paused:
		p.state = "paused"
	default:
		p.state = "ok"
	}
}

// State is "ok", "paused", "unknown" or "error: ...".
func (p *PgBouncer) State() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// isPaused reports whether this agent has the primary databases paused.
func (p *PgBouncer) isPaused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

func (p *PgBouncer) connect(ctx context.Context) (*pgconn.PgConn, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := pgconn.Connect(cctx, p.cfg.AdminDSN)
	if err != nil {
		return nil, fmt.Errorf("connect to pgbouncer admin console: %w", err)
	}
	return c, nil
}

// admin runs one admin console command (simple query protocol) on a new
// connection and returns its results.
func (p *PgBouncer) admin(ctx context.Context, sql string) ([]*pgconn.Result, error) {
	c, err := p.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.Background())
	res, err := c.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("pgbouncer %s: %w", sql, err)
	}
	return res, nil
}

// alreadyDone are admin errors meaning the state asked for holds already.
func alreadyDone(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	for _, m := range []string{"already suspended", "already paused", "is not paused", "not paused", "pooler is not paused"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// dbInfo is one SHOW DATABASES row.
type dbInfo struct {
	host, port string
	paused     bool
}

// parseShowDatabases reads SHOW DATABASES by column name (the columns
// differ between PgBouncer versions).
func parseShowDatabases(res []*pgconn.Result) (map[string]dbInfo, error) {
	if len(res) == 0 {
		return nil, errors.New("SHOW DATABASES: no result")
	}
	r := res[0]
	col := map[string]int{}
	for i, f := range r.FieldDescriptions {
		col[f.Name] = i
	}
	for _, need := range []string{"name", "host", "port"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("SHOW DATABASES: no %q column", need)
		}
	}
	out := map[string]dbInfo{}
	for _, row := range r.Rows {
		info := dbInfo{host: string(row[col["host"]]), port: string(row[col["port"]])}
		if i, ok := col["paused"]; ok {
			info.paused = string(row[i]) == "1"
		}
		out[string(row[col["name"]])] = info
	}
	return out, nil
}

// showDatabases is SHOW DATABASES as name -> host, port, paused.
func (p *PgBouncer) showDatabases(ctx context.Context) (map[string]dbInfo, error) {
	res, err := p.admin(ctx, "SHOW DATABASES")
	if err != nil {
		return nil, err
	}
	return parseShowDatabases(res)
}

// verify checks that every managed database has the host and port written
// for leader: PgBouncer's RELOAD says success even when loading failed.
func (p *PgBouncer) verify(dbs map[string]dbInfo, leader string) error {
	var bad []string
	want := p.databases()
	for _, name := range namesOf(want, "") {
		h, port := p.target(want[name], leader)
		got, ok := dbs[name]
		switch {
		case !ok:
			bad = append(bad, name+" missing")
		case got.host != h || got.port != port:
			bad = append(bad, fmt.Sprintf("%s points at %s:%s, want %s:%s", name, got.host, got.port, h, port))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("pgbouncer did not load %s: %s", p.cfg.DatabasesFile, strings.Join(bad, "; "))
	}
	return nil
}

// SetLeader points the "primary" databases at leader (host:port; "" when
// there is none), rewriting the file and reloading only when PgBouncer
// does not already point there.
func (p *PgBouncer) SetLeader(ctx context.Context, leader string) error {
	err := p.setLeader(ctx, leader)
	p.setState(err)
	return err
}

func (p *PgBouncer) setLeader(ctx context.Context, leader string) error {
	if leader != "" {
		if _, _, err := net.SplitHostPort(leader); err != nil {
			return fmt.Errorf("pooler: leader address %q: %w", leader, err)
		}
	}
	p.write.Lock()
	defer p.write.Unlock()
	return p.repoint(ctx, leader)
}

// repoint writes the file for leader and reloads PgBouncer unless it
// points there already; p.write is held.
func (p *PgBouncer) repoint(ctx context.Context, leader string) error {
	content := p.render(leader)
	p.mu.Lock()
	written := p.written
	p.mu.Unlock()
	if content == written {
		if dbs, err := p.showDatabases(ctx); err == nil && p.verify(dbs, leader) == nil {
			p.noteServerTLS(p.checkServerTLS(ctx))
			return nil
		}
	}
	if err := atomicfile.Write(p.cfg.DatabasesFile, []byte(content), 0o644); err != nil {
		return err
	}
	p.mu.Lock()
	p.written, p.leader = content, leader
	p.mu.Unlock()
	if _, err := p.admin(ctx, "RELOAD"); err != nil {
		return err
	}
	dbs, err := p.showDatabases(ctx)
	if err != nil {
		return err
	}
	if err := p.verify(dbs, leader); err != nil {
		return err
	}
	p.noteServerTLS(p.checkServerTLS(ctx))
	p.log.Info("pgbouncer repointed", "leader", leader)
	return nil
}

// checkServerTLS reads PgBouncer's server_tls_sslmode when the servers
// demand TLS. PgBouncer (1.18) sets it for all databases, in the
// [pgbouncer] section of pgbouncer.ini, which the operator owns: a second
// [pgbouncer] section in the included file would reset every setting
// before it. With postgres.tls the default pg_hba takes TCP only over TLS,
// so a PgBouncer that does not ask for it fails every server login: an
// error naming the fix. One that encrypts without
// the verification postgres.tls.ca asks for is warned about.
func (p *PgBouncer) checkServerTLS(ctx context.Context) error {
	if p.serverSSLMode == "" {
		return nil
	}
	res, err := p.admin(ctx, "SHOW CONFIG")
	if err != nil {
		return err
	}
	mode, err := configValue(res, "server_tls_sslmode")
	if err != nil {
		return err
	}
	fix := "set server_tls_sslmode = " + p.serverSSLMode
	if p.serverSSLMode == "verify-full" {
		fix += " and server_tls_ca_file = postgres.tls.ca"
	}
	switch mode {
	case "disable", "allow":
		return fmt.Errorf("pgbouncer server_tls_sslmode is %s but postgres.tls is set, so the servers take only TLS: %s in pgbouncer.ini", mode, fix)
	case p.serverSSLMode, "verify-full":
		return nil
	}
	p.log.Warn("pgbouncer checks its server connections less than postgres.tls asks", "server_tls_sslmode", mode, "fix", fix)
	return nil
}

// noteServerTLS records what checkServerTLS found, logged when it changes.
// It is the pooler's state, not SetLeader's error: the repoint itself
// worked, and the agent resumes a paused pooler only after a repoint that
// succeeded.
func (p *PgBouncer) noteServerTLS(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	p.mu.Lock()
	changed := msg != p.tlsProblem
	p.tlsProblem = msg
	p.mu.Unlock()
	switch {
	case changed && msg != "":
		p.log.Error("pgbouncer cannot reach the servers", "error", msg)
	case changed:
		p.log.Info("pgbouncer asks the servers for TLS now")
	}
}

// configValue is key's value in SHOW CONFIG (columns by name).
func configValue(res []*pgconn.Result, key string) (string, error) {
	if len(res) == 0 {
		return "", errors.New("SHOW CONFIG: no result")
	}
	k, v := -1, -1
	for i, f := range res[0].FieldDescriptions {
		switch f.Name {
		case "key":
			k = i
		case "value":
			v = i
		}
	}
	if k < 0 || v < 0 {
		return "", errors.New("SHOW CONFIG: no key or value column")
	}
	for _, row := range res[0].Rows {
		if string(row[k]) == key {
			return string(row[v]), nil
		}
	}
	return "", fmt.Errorf("SHOW CONFIG: no %s", key)
}

// Pause holds new transactions of the "primary" databases so clients wait
// instead of failing while the leader changes. Each PAUSE has the
// configured deadline: when a transaction keeps it from completing (a long
// transaction, a frozen old primary) the database's connections are killed
// and it is resumed, and the error says so. A paused database is always
// resumed by Resume.
func (p *PgBouncer) Pause(ctx context.Context) error {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	var errs []error
	for _, name := range p.names("primary") {
		if err := p.pauseOne(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	p.setState(err)
	return err
}

func (p *PgBouncer) pauseOne(ctx context.Context, name string) error {
	pctx, cancel := context.WithTimeout(ctx, p.cfg.PauseTimeout.D())
	defer cancel()
	start := time.Now()
	c, err := p.connect(pctx)
	if err != nil {
		return err
	}
	_, err = c.Exec(pctx, "PAUSE "+name).ReadAll()
	c.Close(context.Background())
	if err == nil || alreadyDone(err) {
		p.log.Debug("pgbouncer database paused", "db", name, "took", time.Since(start))
		return nil
	}
	if pctx.Err() == nil {
		return fmt.Errorf("pgbouncer PAUSE %s: %w", name, err)
	}
	// The pending PAUSE leaves the database paused inside PgBouncer: kill
	// what holds it, then resume, so no database stays stuck.
	p.log.Warn("pgbouncer PAUSE did not complete in time: killing the database's connections and resuming it",
		"db", name, "timeout", p.cfg.PauseTimeout.D())
	kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer kcancel()
	_, kerr := p.admin(kctx, "KILL "+name)
	_, rerr := p.admin(kctx, "RESUME "+name)
	if alreadyDone(rerr) {
		rerr = nil
	}
	return errors.Join(fmt.Errorf("pgbouncer PAUSE %s timed out after %s: connections killed", name, p.cfg.PauseTimeout.D()), kerr, rerr)
}

// Fence points the "primary" databases nowhere and drops every client and
// server connection they have (KILL), so no client, session-pooled or not,
// keeps talking to the old primary; new clients wait until Resume.
func (p *PgBouncer) Fence(ctx context.Context) error {
	err := p.setLeader(ctx, "")
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	for _, name := range p.names("primary") {
		if _, kerr := p.admin(ctx, "KILL "+name); kerr != nil && !alreadyDone(kerr) {
			err = errors.Join(err, fmt.Errorf("pgbouncer KILL %s: %w", name, kerr))
		}
	}
	p.setState(err)
	return err
}

// Resume resumes the "primary" databases.
func (p *PgBouncer) Resume(ctx context.Context) error {
	err := p.resume(ctx, p.names("primary"))
	if err == nil {
		p.mu.Lock()
		p.paused = false
		p.mu.Unlock()
	}
	p.setState(err)
	return err
}

// ResumeAll resumes every managed database: at start, an earlier agent
// that crashed mid-switchover may have left one paused.
func (p *PgBouncer) ResumeAll(ctx context.Context) error {
	err := p.resume(ctx, p.names(""))
	if err == nil {
		p.mu.Lock()
		p.paused = false
		p.mu.Unlock()
	}
	p.setState(err)
	return err
}

func (p *PgBouncer) resume(ctx context.Context, names []string) error {
	var errs []error
	for _, name := range names {
		if _, err := p.admin(ctx, "RESUME "+name); err != nil && !alreadyDone(err) && !strings.Contains(err.Error(), "no such database") {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
