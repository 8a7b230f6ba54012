package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgwarden/pgwarden/internal/atomicfile"
	"github.com/pgwarden/pgwarden/wal"
)

func historyFileName(tli uint32) string { return fmt.Sprintf("%08X.history", tli) }

// ParseHistory reads a timeline history file: one "parentTLI switchpoint
// reason" line per ancestor; blank and '#' lines are skipped.
func ParseHistory(text string) ([]wal.Fork, error) {
	var out []wal.Fork
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 2 {
			return nil, fmt.Errorf("timeline history: bad line %q", l)
		}
		tli, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("timeline history: bad timeline in %q", l)
		}
		lsn, err := wal.ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("timeline history: %w", err)
		}
		out = append(out, wal.Fork{Timeline: uint32(tli), LSN: lsn})
	}
	return out, nil
}

// history is timeline tli's history, read through the server (which may
// have streamed the file from its upstream), cached.
func (s *Server) history(ctx context.Context, tli uint32) []wal.Fork {
	if tli <= 1 {
		return nil
	}
	if h, ok := s.cachedHistory(tli); ok {
		return h
	}
	var text string
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, sqlReadFile, "pg_wal/"+historyFileName(tli)).Scan(&text)
	})
	if err != nil {
		s.log.Debug("cannot read timeline history", "timeline", tli, "error", err)
		return nil
	}
	return s.cacheHistory(tli, text)
}

// historyFromFile reads it from the data directory of a stopped server.
func (s *Server) historyFromFile(tli uint32) []wal.Fork {
	if tli <= 1 {
		return nil
	}
	if h, ok := s.cachedHistory(tli); ok {
		return h
	}
	b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, "pg_wal", historyFileName(tli)))
	if err != nil {
		return nil
	}
	return s.cacheHistory(tli, string(b))
}

func (s *Server) cachedHistory(tli uint32) ([]wal.Fork, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.histories[tli]
	return h, ok
}

func (s *Server) cacheHistory(tli uint32, text string) []wal.Fork {
	h, err := ParseHistory(text)
	if err != nil {
		s.log.Warn("unreadable timeline history", "timeline", tli, "error", err)
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.histories == nil {
		s.histories = map[uint32][]wal.Fork{}
	}
	s.histories[tli] = h
	return h
}

// reservedHistory is what a reserved timeline's history file holds: no
// ancestor, so a standby scanning for a newer timeline to follow finds it
// is not a child of its own and stays where it is.
const reservedHistory = "# timeline ID reserved by pgwarden: this node was promoted from an ancestor of a newer timeline\n"

// ReserveTimelines makes the next promotion of this standby choose a
// timeline ID above upTo: PostgreSQL picks the highest ID whose history
// file exists in pg_wal (or the archive) plus one, and a standby that never
// saw a newer timeline would otherwise reuse its ID for different WAL. A
// history file that exists is left as it is.
func (s *Server) ReserveTimelines(ctx context.Context, upTo uint32) error {
	st, err := s.Status(ctx)
	if err != nil {
		return fmt.Errorf("reserve timelines: %w", err)
	}
	if !st.Answering {
		return errors.New("reserve timelines: postgres does not answer")
	}
	for t := st.Timeline + 1; t <= upTo; t++ {
		p := filepath.Join(s.cfg.DataDir, "pg_wal", historyFileName(t))
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := atomicfile.Write(p, []byte(reservedHistory), 0o600); err != nil {
			return fmt.Errorf("reserve timeline %d: %w", t, err)
		}
		s.log.Info("timeline ID reserved before promotion", "timeline", t)
	}
	return nil
}

// Role is what a server said of itself when asked directly.
type Role int

// Roles a probe can report.
const (
	// RoleNoAnswer: refused, or no answer in time.
	RoleNoAnswer Role = iota
	RoleStandby
	RolePrimary
	// RoleRunning: the server answered (an error of its own: too many
	// clients, starting up, authentication), but not with its role.
	RoleRunning
)

// Probe connects to the PostgreSQL server at hostPort with this node's
// superuser credentials and asks whether it is in recovery. It is how a
// candidate checks that the last leader's server really stopped being a
// primary, whatever its agent's REST API says or fails to say.
func (s *Server) Probe(ctx context.Context, hostPort string) Role {
	host, port, err := splitHostPortNum(hostPort)
	if err != nil {
		return RoleNoAnswer
	}
	cc, err := s.dialConfig(host, port)
	if err != nil {
		return RoleNoAnswer
	}
	if dl, ok := ctx.Deadline(); ok {
		cc.ConnectTimeout = max(time.Until(dl), 10*time.Millisecond)
	}
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			return RoleRunning
		}
		return RoleNoAnswer
	}
	defer c.Close(context.Background())
	var rec bool
	if err := c.QueryRow(ctx, sqlInRecovery).Scan(&rec); err != nil {
		return RoleRunning
	}
	if rec {
		return RoleStandby
	}
	return RolePrimary
}

func splitHostPortNum(hp string) (string, uint16, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return h, uint16(n), nil
}

// walEnd is where a standby's WAL ends, as a timeline and a position that
// belong together, from IDENTIFY_SYSTEM on a replication connection to
// itself (as the replication user, whom the default pg_hba admits): the
// replay timeline, and the received position when it is on that timeline,
// else the replayed one. SQL has no function for the replay timeline.
func (s *Server) walEnd(ctx context.Context) (uint32, wal.LSN, error) {
	host, port, err := splitHostPortNum(s.cfg.Listen)
	if err != nil {
		return 0, 0, err
	}
	user, pass := s.cfg.ReplUser, s.cfg.ReplPassword
	if user == "" {
		user, pass = s.cfg.SuperUser, s.cfg.SuperPassword
	}
	cc, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%d %s replication=true dbname=replication", conninfoQuote(host), port, s.cfg.TLS.Keywords()))
	if err != nil {
		return 0, 0, err
	}
	s.cfg.TLS.verifySelf(cc)
	cc.User, cc.Password = user, pass
	cc.ConnectTimeout = 3 * time.Second
	cc.RuntimeParams["application_name"] = "pgwarden"
	c, err := pgconn.ConnectConfig(ctx, cc)
	if err != nil {
		return 0, 0, fmt.Errorf("replication connection: %w", err)
	}
	defer c.Close(context.Background())
	res, err := c.Exec(ctx, sqlIdentifySystem).ReadAll()
	if err != nil {
		return 0, 0, fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) < 3 {
		return 0, 0, errors.New("IDENTIFY_SYSTEM: unexpected answer")
	}
	row := res[0].Rows[0]
	t, err := strconv.ParseUint(string(row[1]), 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("IDENTIFY_SYSTEM timeline %q: %w", row[1], err)
	}
	end, err := wal.ParseLSN(string(row[2]))
	if err != nil {
		return 0, 0, fmt.Errorf("IDENTIFY_SYSTEM position: %w", err)
	}
	return uint32(t), end, nil
}
