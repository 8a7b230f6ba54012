package postgres

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/pgwarden/pgwarden/postgres/pgproc"
	"github.com/pgwarden/pgwarden/postgres/pgstate"
	"github.com/pgwarden/pgwarden/wal"
)

// Config says where the local PostgreSQL lives and how to reach it.
type Config struct {
	BinDir  string
	DataDir string
	// Listen is host:port: listen_addresses and port, and where this
	// package connects (over TCP, as SuperUser).
	Listen                   string
	SuperUser, SuperPassword string
	ReplUser, ReplPassword   string
	// Parameters are written as given into pgwarden.conf.
	Parameters map[string]string
	// PgHBA is the whole pg_hba.conf; empty means the safe default.
	PgHBA []string
	// AppName is this member's name, sent as application_name upstream.
	AppName string
	// Archive, when set, is the WAL archive (archive_command on every
	// node, restore_command for standbys).
	Archive *Archive
	// TLS, when set, turns ssl on; every connection to a server of the
	// cluster (this one, an upstream, a probed peer) then uses it.
	TLS *TLS
}

// Upstream is a primary to stream from; Host "" is a standby with none.
type Upstream struct {
	Host string
	Port int
	Slot string
}

// ErrRewindImpossible: pg_rewind could not make the data directory fit to
// follow; the caller re-clones.
var ErrRewindImpossible = errors.New("pg_rewind impossible")

// Server drives one PostgreSQL data directory.
type Server struct {
	cfg Config
	log hclog.Logger

	mu   sync.Mutex
	conn *pgx.Conn
	// histories caches parsed timeline history files by timeline: a
	// timeline's history never changes.
	histories map[uint32][]wal.Fork
}

// New makes a Server; nothing is touched until a method is called.
func New(cfg Config, log hclog.Logger) *Server {
	return &Server{cfg: cfg, log: log}
}

func (s *Server) bin(name string) string { return filepath.Join(s.cfg.BinDir, name) }

// logFile is where the server's own log goes: beside, not inside, the data
// directory, so pg_basebackup does not copy it.
func (s *Server) logFile() string { return filepath.Clean(s.cfg.DataDir) + ".log" }

// run runs an outside command, its output streamed to the logger, and
// returns the combined output too (for error classification).
func (s *Server) run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	return s.runCmd(ctx, env, false, name, args...)
}

// runTree is run for a program that starts children of its own
// (pg_basebackup's WAL streamer, pg_rewind's single-user postgres): it runs
// in a process group of its own, and a cancelled context kills the whole
// group, so no child is left copying into or recovering a data directory
// the agent has given up on.
func (s *Server) runTree(ctx context.Context, env []string, name string, args ...string) (string, error) {
	return s.runCmd(ctx, env, true, name, args...)
}

func (s *Server) runCmd(ctx context.Context, env []string, group bool, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.bin(name), args...)
	if group {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	}
	cmd.Env = append(os.Environ(), env...)
	cmd.Env = append(cmd.Env, "LC_ALL=C")
	cmd.WaitDelay = 5 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var out strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			out.WriteString(line + "\n")
			if !strings.HasPrefix(line, "Mock authentication nonce:") {
				// pg_controldata's nonce answers for users that do not
				// exist: a secret of the server, kept out of the log.
				s.log.Debug(name, "output", line)
			}
		}
	}()
	err := cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", name, err, lastLines(out.String(), 3))
	}
	return out.String(), nil
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " | ")
}

// secondsLeft is a pg_ctl -t value from ctx's deadline (default def).
func secondsLeft(ctx context.Context, def time.Duration) string {
	d := def
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl)
	}
	return strconv.Itoa(max(int(d.Seconds()), 1))
}

// connConfig is the agent's connection to this server: over TCP to
// Listen, as the superuser.
func (s *Server) connConfig() (*pgx.ConnConfig, error) {
	host, port, err := splitHostPortNum(s.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("postgres listen %q: %w", s.cfg.Listen, err)
	}
	cc, err := s.dialConfig(host, port)
	if err != nil {
		return nil, err
	}
	s.cfg.TLS.verifySelf(&cc.Config)
	return cc, nil
}

// dialConfig is a superuser connection to a server of the cluster at
// host:port, with the cluster's TLS settings (the certificate verified
// against host).
func (s *Server) dialConfig(host string, port uint16) (*pgx.ConnConfig, error) {
	cc, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d %s", conninfoQuote(host), port, s.cfg.TLS.Keywords()))
	if err != nil {
		return nil, fmt.Errorf("connection to %s:%d: %w", host, port, err)
	}
	cc.User, cc.Password, cc.Database = s.cfg.SuperUser, s.cfg.SuperPassword, "postgres"
	cc.ConnectTimeout = 3 * time.Second
	cc.RuntimeParams["application_name"] = "pgwarden"
	// One short query per loop: no statement cache needed.
	cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return cc, nil
}

// withConn runs f on the cached connection, reconnecting once if it broke.
func (s *Server) withConn(ctx context.Context, f func(*pgx.Conn) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if s.conn == nil || s.conn.IsClosed() {
			cc, err := s.connConfig()
			if err != nil {
				return err
			}
			c, err := pgx.ConnectConfig(ctx, cc)
			if err != nil {
				return fmt.Errorf("connect to postgres at %s: %w", s.cfg.Listen, err)
			}
			s.conn = c
		}
		err := f(s.conn)
		if err == nil {
			return nil
		}
		s.conn.Close(context.Background())
		s.conn = nil
		if attempt > 0 || ctx.Err() != nil {
			return err
		}
	}
}

func (s *Server) dropConn() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close(context.Background())
		s.conn = nil
	}
}

// execSQL runs one statement as the superuser.
func (s *Server) execSQL(ctx context.Context, sql string) error {
	return s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, sql)
		return err
	})
}

func (s *Server) dataEmpty() bool {
	_, err := os.Stat(filepath.Join(s.cfg.DataDir, "PG_VERSION"))
	return err != nil
}

// postmaster is the postmaster.pid of a living postmaster of this data
// directory (alive false when there is none: no pid file, a dead or
// zombie process, or a PID reused by a process working elsewhere).
func (s *Server) postmaster() (pgproc.PIDFile, bool) {
	pf, alive, _ := pgproc.Postmaster(s.cfg.DataDir)
	return pf, alive
}

func (s *Server) controlData(ctx context.Context) (controlData, error) {
	out, err := s.run(ctx, nil, "pg_controldata", "-D", s.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	return parseControlData(out), nil
}

// Status reads the server's state: files when it is down, one query when
// it is up.
func (s *Server) Status(ctx context.Context) (pgstate.Server, error) {
	st := pgstate.Server{DataEmpty: s.dataEmpty(), State: "stopped"}
	if st.DataEmpty {
		return st, nil
	}
	pf, alive := s.postmaster()
	if !alive {
		s.dropConn()
		if ps, err := pgproc.Processes(s.cfg.DataDir); err == nil && len(ps) > 0 {
			st.Orphans = true
		}
		cd, err := s.controlData(ctx)
		if err != nil {
			return st, fmt.Errorf("read control data: %w", err)
		}
		st.SystemID = cd["Database system identifier"]
		switch cd.state() {
		case "shut down":
			st.WasPrimary = true
		case "in production":
			st.WasPrimary = true
			st.State = "crashed"
		case "in archive recovery", "in crash recovery":
			st.State = "crashed"
		}
		if pf.PID > 0 {
			st.State = "crashed"
		}
		if tli, err := strconv.ParseUint(cd["Latest checkpoint's TimeLineID"], 10, 32); err == nil {
			st.Timeline = uint32(tli)
		}
		st.History = s.historyFromFile(st.Timeline)
		return st, nil
	}
	st.Running, st.PostmasterPID, st.PostmasterStart = true, pf.PID, pf.Start
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var cur, recv, repl, wrStatus, conninfo, senders string
	var tli int64
	err := s.withConn(qctx, func(c *pgx.Conn) error {
		return c.QueryRow(qctx, sqlStatus).Scan(&st.InRecovery, &cur, &recv, &repl, &tli, &wrStatus,
			&st.SystemID, &st.ServerVersion, &st.ReplicationConns, &conninfo, &st.PendingRestart, &senders)
	})
	if err != nil {
		// It runs: whether it is a primary that still accepts writes from
		// its sessions cannot be told from here, only whether it was
		// started as a standby.
		switch pf.Status {
		case "starting", "stopping":
			st.State = pf.Status
		default:
			st.State = "unresponsive"
		}
		st.InRecovery = s.standbySignal() || pf.Status == "standby"
		st.Upstream = s.configuredUpstream()
		s.log.Debug("postgres not answering", "status", pf.Status, "error", err)
		return st, nil
	}
	st.Answering, st.State = true, "running"
	st.Timeline = uint32(tli)
	if err := json.Unmarshal([]byte(senders), &st.WALSenders); err != nil {
		s.log.Debug("cannot read the WAL senders", "error", err)
	}
	replayEnd := wal.LSN(0)
	if st.InRecovery && wrStatus != "streaming" {
		// With no WAL receiver the query's timeline is the last
		// checkpoint's, which a standby that replayed into a newer timeline
		// has not reached yet, and its received position may be on another
		// timeline than its replay: ask the server where its WAL ends.
		if t, end, err := s.walEnd(qctx); err == nil {
			st.Timeline, replayEnd = t, end
		} else {
			s.log.Debug("cannot read where the standby's WAL ends", "error", err)
		}
	}
	st.History = s.history(qctx, st.Timeline)
	st.Streaming = wrStatus == "streaming"
	st.Upstream = upstreamFromConninfo(conninfo)
	if st.InRecovery {
		st.Received, _ = parseOptLSN(recv)
		st.Replayed, _ = parseOptLSN(repl)
		st.WAL = max(st.Received, st.Replayed)
		if replayEnd != 0 {
			st.WAL = replayEnd
		}
	} else {
		st.WAL, _ = parseOptLSN(cur)
		st.Received, st.Replayed = st.WAL, st.WAL
	}
	return st, nil
}

func (s *Server) standbySignal() bool {
	_, err := os.Stat(filepath.Join(s.cfg.DataDir, "standby.signal"))
	return err == nil
}

// configuredUpstream is host:port of primary_conninfo in pgwarden.conf, for
// a server that does not answer queries yet.
func (s *Server) configuredUpstream() string {
	b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, managedConf))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(l, "primary_conninfo = ")
		if !ok {
			continue
		}
		return upstreamFromConninfo(confUnquote(v))
	}
	return ""
}

func parseOptLSN(s string) (wal.LSN, error) {
	if s == "" {
		return 0, nil
	}
	return wal.ParseLSN(s)
}

// Bootstrap creates a new cluster (InitDB), starts it as primary and
// creates the replication role (CreateRoles).
func (s *Server) Bootstrap(ctx context.Context) error {
	if err := s.InitDB(ctx); err != nil {
		return err
	}
	if err := s.Start(ctx, nil); err != nil {
		return fmt.Errorf("start new cluster: %w", err)
	}
	return s.CreateRoles(ctx)
}

// InitDB creates a new cluster in the empty data directory (with data
// checksums, so pg_rewind works) and leaves it stopped.
func (s *Server) InitDB(ctx context.Context) error {
	if !s.dataEmpty() {
		return fmt.Errorf("bootstrap: %s already holds a cluster", s.cfg.DataDir)
	}
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if err := os.Chmod(s.cfg.DataDir, 0o700); err != nil {
		return err
	}
	// initdb stores what --pwfile holds as the superuser's password: a
	// verifier is kept as is, so the plaintext reaches neither the file
	// nor the server.
	verifier, err := SCRAMVerifier(s.cfg.SuperPassword)
	if err != nil {
		return err
	}
	pw, err := os.CreateTemp("", "pgwarden-pw-")
	if err != nil {
		return err
	}
	defer os.Remove(pw.Name())
	if _, err := pw.WriteString(verifier + "\n"); err != nil {
		pw.Close()
		return err
	}
	pw.Close()
	if _, err := s.run(ctx, nil, "initdb", "-D", s.cfg.DataDir, "-U", s.cfg.SuperUser, "--pwfile="+pw.Name(),
		"--data-checksums", "--encoding=UTF8", "--locale=C", "--auth-local=peer", "--auth-host=scram-sha-256"); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	return nil
}

// CreateRoles creates the replication role on the new, running primary,
// with a verifier computed here (SCRAMVerifier): the statement, which a
// server with log_statement = ddl logs, holds no plaintext password.
func (s *Server) CreateRoles(ctx context.Context) error {
	if s.cfg.ReplUser == "" {
		return nil
	}
	verifier, err := SCRAMVerifier(s.cfg.ReplPassword)
	if err != nil {
		return err
	}
	if err := s.execSQL(ctx, sqlCreateReplicationRole(s.cfg.ReplUser, verifier)); err != nil {
		return fmt.Errorf("create replication role %s: %w", s.cfg.ReplUser, err)
	}
	return nil
}

// standbyStartBound is how long Start waits for a standby to accept
// connections before leaving it to start on its own.
const standbyStartBound = 10 * time.Second

// Start starts the server as primary (up nil) or standby of up. A primary
// is waited for until it accepts connections (crash recovery included). A
// standby is waited for at most standbyStartBound: one that cannot reach a
// consistent state without its upstream (the slot it streams from not
// created yet, WAL the upstream has still to send) would otherwise hold
// the HA loop, and with it the member record from which the upstream
// creates that slot. A stale lock file whose PID is still a zombie makes
// pg_ctl fail: that is retried until ctx ends.
func (s *Server) Start(ctx context.Context, up *Upstream) error {
	if _, alive := s.postmaster(); alive {
		return errors.New("start postgres: already running")
	}
	if err := s.writeConfig(up); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 120*time.Second)
		defer cancel()
	}
	wait := 60 * time.Second
	for {
		t := secondsLeft(ctx, wait)
		if up != nil {
			t = strconv.Itoa(int(standbyStartBound.Seconds()))
		}
		out, err := s.run(ctx, nil, "pg_ctl", "start", "-D", s.cfg.DataDir, "-l", s.logFile(), "-w", "-t", t, "-s")
		if err == nil {
			return nil
		}
		if _, alive := s.postmaster(); alive && up != nil && ctx.Err() == nil {
			s.log.Info("standby started but not accepting connections yet (no consistent state): leaving it to start", "waited", standbyStartBound)
			return nil
		}
		retry := strings.Contains(out, "lock file") || strings.Contains(out, "another server might be running")
		if !retry || ctx.Err() != nil {
			return fmt.Errorf("start postgres: %w (server log: %s)", err, s.logTail())
		}
		s.log.Info("postgres lock file still held (a killed postmaster not yet reaped?): retrying")
		select {
		case <-ctx.Done():
			return fmt.Errorf("start postgres: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// logTail is the reason PostgreSQL gave: the last FATAL or PANIC lines of
// its log, else its last lines.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logFile())
	if err != nil {
		return "unavailable"
	}
	lines := strings.Split(strings.TrimSpace(lastLines(string(b), 40)), " | ")
	var bad []string
	for _, l := range lines {
		if strings.Contains(l, "FATAL") || strings.Contains(l, "PANIC") || strings.Contains(l, "ERROR") {
			bad = append(bad, l)
		}
	}
	if len(bad) > 3 {
		bad = bad[len(bad)-3:]
	}
	if len(bad) > 0 {
		return strings.Join(bad, " | ")
	}
	return lastLines(string(b), 3)
}

// Stop stops the server ("smart" or "fast"; "immediate" is Fence);
// stopping a stopped server is not an error.
func (s *Server) Stop(ctx context.Context, mode string) error {
	if mode == "immediate" {
		return s.Fence(ctx)
	}
	s.dropConn()
	if _, alive := s.postmaster(); !alive {
		return nil
	}
	_, err := s.run(ctx, nil, "pg_ctl", "stop", "-D", s.cfg.DataDir, "-m", mode, "-w", "-t", secondsLeft(ctx, 60*time.Second), "-s")
	if err != nil {
		if _, alive := s.postmaster(); !alive {
			return nil
		}
		return fmt.Errorf("stop postgres (%s): %w", mode, err)
	}
	return nil
}

// fenceBound bounds a fence when the caller set no deadline.
const fenceBound = 10 * time.Second

// Fence leaves no process of the data directory able to commit: the
// postmaster and every process working in the directory are killed
// (backends call setsid() and outlive a killed postmaster; an
// archive_command's children were never its children), and it returns
// once none is alive, zombies aside, or with an error naming the
// survivors.
func (s *Server) Fence(ctx context.Context) error {
	s.dropConn()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fenceBound)
		defer cancel()
	}
	rep, err := pgproc.Fence(ctx, s.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("fence postgres: %w", err)
	}
	if len(rep.Killed) > 0 {
		s.log.Warn("postgres fenced", "postmaster", rep.Postmaster, "killed", len(rep.Killed), "took", rep.Took.Round(time.Microsecond))
	}
	return nil
}

// Restart restarts the server in its current role.
func (s *Server) Restart(ctx context.Context) error {
	s.dropConn()
	_, err := s.run(ctx, nil, "pg_ctl", "restart", "-D", s.cfg.DataDir, "-m", "fast", "-l", s.logFile(), "-w", "-t", secondsLeft(ctx, 60*time.Second), "-s")
	if err != nil {
		return fmt.Errorf("restart postgres: %w", err)
	}
	return nil
}

// Reload makes the server re-read its configuration files.
func (s *Server) Reload(ctx context.Context) error {
	if _, err := s.run(ctx, nil, "pg_ctl", "reload", "-D", s.cfg.DataDir, "-s"); err != nil {
		return fmt.Errorf("reload postgres: %w", err)
	}
	return nil
}

// Promote ends recovery and waits until the server accepts writes.
func (s *Server) Promote(ctx context.Context) error {
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		var ok bool
		return c.QueryRow(ctx, sqlPromote).Scan(&ok)
	})
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	return s.waitWritable(ctx)
}

func (s *Server) waitWritable(ctx context.Context) error {
	for {
		if _, alive := s.postmaster(); !alive {
			return errors.New("wait for promotion: postgres is not running")
		}
		var rec bool
		err := s.withConn(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, sqlInRecovery).Scan(&rec)
		})
		if err == nil && !rec {
			// A new timeline's first write: proves it accepts writes.
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for promotion: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Follow makes the server a standby of up: a running standby is repointed
// by a reload (PostgreSQL 13+ restarts the WAL receiver), a running primary
// is stopped and started as standby, a stopped server is started.
func (s *Server) Follow(ctx context.Context, up Upstream) error {
	st, err := s.Status(ctx)
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	switch {
	case st.Running && st.InRecovery, st.State == "starting" && s.standbySignal():
		if err := s.writeConfig(&up); err != nil {
			return fmt.Errorf("follow: %w", err)
		}
		return s.Reload(ctx)
	case st.Running:
		if err := s.Stop(ctx, "fast"); err != nil {
			return fmt.Errorf("follow: %w", err)
		}
	}
	return s.Start(ctx, &up)
}

// Clone copies up's data with pg_basebackup into the empty data directory
// and writes the standby configuration; the server is left stopped.
func (s *Server) Clone(ctx context.Context, up Upstream) error {
	if !s.dataEmpty() {
		return fmt.Errorf("clone: %s already holds a cluster", s.cfg.DataDir)
	}
	if err := os.RemoveAll(s.cfg.DataDir); err != nil {
		return fmt.Errorf("clone: clear data directory: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(s.cfg.DataDir)), 0o700); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	args := []string{"-D", s.cfg.DataDir, "-h", up.Host, "-p", strconv.Itoa(up.Port), "-U", s.cfg.ReplUser,
		"-X", "stream", "-c", "fast", "-w", "--no-password"}
	env := append([]string{"PGPASSWORD=" + s.cfg.ReplPassword, "PGCONNECT_TIMEOUT=5", "PGAPPNAME=" + s.cfg.AppName}, s.cfg.TLS.env()...)
	withSlot := args
	if up.Slot != "" {
		withSlot = append(append([]string{}, args...), "-S", up.Slot)
	}
	out, err := s.runTree(ctx, env, "pg_basebackup", withSlot...)
	if err != nil && up.Slot != "" && strings.Contains(out, "does not exist") {
		// The leader creates members' slots on its next loop; do not wait.
		s.log.Info("replication slot not there yet: cloning without it", "slot", up.Slot)
		_ = os.RemoveAll(s.cfg.DataDir)
		_, err = s.runTree(ctx, env, "pg_basebackup", args...)
	}
	if err != nil {
		_ = os.RemoveAll(s.cfg.DataDir)
		return fmt.Errorf("clone from %s:%d: %w", up.Host, up.Port, err)
	}
	if err := os.Chmod(s.cfg.DataDir, 0o700); err != nil {
		return err
	}
	// pg_basebackup copied the primary's pgwarden.conf (its port): rewrite.
	return s.writeConfig(&up)
}

// Rewind makes a stopped former primary fit to follow up. A data directory
// that was not shut down cleanly is first taken through crash recovery in
// single-user mode (pg_rewind needs a clean shutdown).
func (s *Server) Rewind(ctx context.Context, up Upstream) error {
	if _, alive := s.postmaster(); alive {
		return errors.New("rewind: postgres is running")
	}
	cd, err := s.controlData(ctx)
	if err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	if st := cd.state(); st != "shut down" && st != "shut down in recovery" {
		s.log.Info("data directory not shut down cleanly: running crash recovery in single-user mode", "state", st)
		_ = os.Remove(filepath.Join(s.cfg.DataDir, "standby.signal"))
		if err := s.singleUserRecovery(ctx); err != nil {
			return fmt.Errorf("rewind: %w", err)
		}
	}
	if err := s.checkpointPromoted(ctx, up); err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	src := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres connect_timeout=5",
		conninfoQuote(up.Host), up.Port, conninfoQuote(s.cfg.SuperUser))
	out, err := s.runTree(ctx, append([]string{"PGPASSWORD=" + s.cfg.SuperPassword}, s.cfg.TLS.env()...), "pg_rewind",
		"--target-pgdata="+s.cfg.DataDir, "--source-server="+src, "--no-sync")
	if err != nil {
		if strings.Contains(out, "could not connect") || strings.Contains(out, "connection to server") {
			// The source is unreachable: nothing is known of this data
			// directory yet.
			return fmt.Errorf("rewind: source unreachable: %w", err)
		}
		return fmt.Errorf("%w: %v", ErrRewindImpossible, err)
	}
	if strings.Contains(out, "no rewind required") {
		s.log.Info("no rewind required")
	}
	// pg_rewind copied the source's configuration files: rewrite ours.
	return s.writeConfig(&up)
}

// checkpointPromoted makes a just-promoted source write its new timeline
// into pg_control. PostgreSQL 15 promotes without a checkpoint, and until
// the next one pg_rewind reads the old timeline from the source, says "no
// rewind required" and leaves a diverged node that can never stream.
func (s *Server) checkpointPromoted(ctx context.Context, up Upstream) error {
	cc, err := s.dialConfig(up.Host, uint16(up.Port))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connect to the new primary %s:%d: %w", up.Host, up.Port, err)
	}
	defer c.Close(context.Background())
	var stale bool
	err = c.QueryRow(ctx, sqlStaleTimeline).Scan(&stale)
	if err != nil {
		return fmt.Errorf("read the new primary's timeline: %w", err)
	}
	if !stale {
		return nil
	}
	s.log.Info("new primary has not checkpointed since its promotion: asking it to", "host", up.Host, "port", up.Port)
	if _, err := c.Exec(ctx, sqlCheckpoint); err != nil {
		return fmt.Errorf("checkpoint on the new primary: %w", err)
	}
	return nil
}

// singleUserRecovery replays WAL and shuts down cleanly without accepting
// connections, retrying while a killed postmaster's lock file is held.
func (s *Server) singleUserRecovery(ctx context.Context) error {
	for {
		cmd := exec.CommandContext(ctx, s.bin("postgres"), "--single", "-D", s.cfg.DataDir, "postgres")
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		if !strings.Contains(string(out), "lock file") || ctx.Err() != nil {
			return fmt.Errorf("crash recovery in single-user mode: %w: %s", err, lastLines(string(out), 3))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("crash recovery in single-user mode: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Wipe removes the data directory (the server must be stopped).
func (s *Server) Wipe(ctx context.Context) error {
	if _, alive := s.postmaster(); alive {
		return errors.New("wipe: postgres is running")
	}
	if err := os.RemoveAll(s.cfg.DataDir); err != nil {
		return fmt.Errorf("wipe data directory: %w", err)
	}
	return nil
}

// Checkpoint runs CHECKPOINT (a later clean shutdown is then quick).
func (s *Server) Checkpoint(ctx context.Context) error {
	if err := s.execSQL(ctx, sqlCheckpoint); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// ShutdownCheckpoint is the location of the shutdown checkpoint record of
// a cleanly stopped server.
func (s *Server) ShutdownCheckpoint(ctx context.Context) (wal.LSN, error) {
	cd, err := s.controlData(ctx)
	if err != nil {
		return 0, err
	}
	if st := cd.state(); st != "shut down" {
		return 0, fmt.Errorf("shutdown checkpoint: cluster state is %q, not a clean shutdown", st)
	}
	return wal.ParseLSN(cd["Latest checkpoint location"])
}

// HandoverLSN is the WAL position a standby has reached once it holds the
// whole shutdown checkpoint record of this cleanly stopped server, for a
// test "received >= HandoverLSN": the record starts at the checkpoint
// location, and positions advance by whole records, so a standby past its
// start has all of it. A no-loss switchover waits for it.
func (s *Server) HandoverLSN(ctx context.Context) (wal.LSN, error) {
	l, err := s.ShutdownCheckpoint(ctx)
	if err != nil {
		return 0, err
	}
	return l + 1, nil
}

// slots lists the physical replication slots.
func (s *Server) slots(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, sqlPhysicalSlots)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var active bool
			if err := rows.Scan(&name, &active); err != nil {
				return err
			}
			out[name] = active
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list replication slots: %w", err)
	}
	return out, nil
}

// SyncSlots creates the physical slots in names that are missing
// (reserving WAL at once; on a standby too, for members cascading from it)
// and drops the inactive ones in neither names nor keep; it returns those
// dropped, and those left that should go but are still in use.
func (s *Server) SyncSlots(ctx context.Context, names, keep []string) (dropped, busy []string, err error) {
	have, err := s.slots(ctx)
	if err != nil {
		return nil, nil, err
	}
	want := map[string]bool{}
	for _, n := range keep {
		want[n] = true
	}
	var errs []error
	for _, n := range names {
		want[n] = true
		if _, ok := have[n]; ok {
			continue
		}
		err := s.withConn(ctx, func(c *pgx.Conn) error {
			_, err := c.Exec(ctx, sqlCreateSlot(n))
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("create slot %s: %w", n, err))
		}
	}
	for n, active := range have {
		if want[n] {
			continue
		}
		if active {
			busy = append(busy, n)
			continue
		}
		err := s.withConn(ctx, func(c *pgx.Conn) error {
			_, err := c.Exec(ctx, sqlDropSlot(n))
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("drop slot %s: %w", n, err))
		} else {
			dropped = append(dropped, n)
		}
	}
	return dropped, busy, errors.Join(errs...)
}

// SetSyncStandbys makes commits wait for the named standbys (see
// syncStandbyNames) and reloads; it returns once the running server uses
// the new value.
func (s *Server) SetSyncStandbys(ctx context.Context, names []string) error {
	want := syncStandbyNames(names)
	if b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, syncConf)); err == nil && string(b) == syncConfText(want) {
		return nil // unchanged: no reload
	}
	if err := s.writeSyncConf(want); err != nil {
		return fmt.Errorf("set synchronous standbys: %w", err)
	}
	if _, alive := s.postmaster(); !alive {
		return nil
	}
	if err := s.Reload(ctx); err != nil {
		return fmt.Errorf("set synchronous standbys: %w", err)
	}
	// The reload is asynchronous: wait until a new session sees it.
	for {
		var got string
		err := s.withConn(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, sqlSyncStandbyNames).Scan(&got)
		})
		if err == nil && got == want {
			return nil
		}
		s.dropConn() // settings are read per session at reload: a fresh one sees it
		select {
		case <-ctx.Done():
			return fmt.Errorf("set synchronous standbys to %q: still %q: %w", want, got, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// SyncState is what the primary reports of its standbys.
type SyncState struct {
	// Current is the primary's current WAL position.
	Current wal.LSN
	// Sync maps each standby that commits now wait for (sync_state sync
	// or quorum) to the position it has flushed.
	Sync map[string]wal.LSN
	// Streaming are the standbys streaming from this server itself (not
	// cascaded through another standby), by application name.
	Streaming map[string]bool
}

// SyncStatus reads pg_stat_replication on the primary.
func (s *Server) SyncStatus(ctx context.Context) (SyncState, error) {
	st := SyncState{Sync: map[string]wal.LSN{}, Streaming: map[string]bool{}}
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, sqlSyncStatus)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var cur, name, flush, state, syncState string
			if err := rows.Scan(&cur, &name, &flush, &state, &syncState); err != nil {
				return err
			}
			if st.Current, err = wal.ParseLSN(cur); err != nil {
				return err
			}
			if name != "" && state == "streaming" {
				st.Streaming[name] = true
			}
			if name != "" && flush != "" && (syncState == "sync" || syncState == "quorum") {
				l, err := wal.ParseLSN(flush)
				if err != nil {
					return err
				}
				st.Sync[name] = l
			}
		}
		return rows.Err()
	})
	if err != nil {
		return st, fmt.Errorf("read synchronous standbys: %w", err)
	}
	return st, nil
}
