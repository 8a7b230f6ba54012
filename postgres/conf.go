package postgres

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/pgwarden/pgwarden/internal/atomicfile"
)

// Files pgwarden manages in the data directory.
const (
	managedConf = "pgwarden.conf"
	// syncConf holds synchronous_standby_names alone, so the leader can
	// change it without rewriting the rest.
	syncConf = "pgwarden-sync.conf"
	// clusterConf holds the cluster-wide parameters (the dynamic
	// configuration's), read before this node's own parameters, which win.
	clusterConf = "pgwarden-cluster.conf"
	includeLine = "include 'pgwarden.conf'"
)

// confQuote quotes a value for postgresql.conf.
func confQuote(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// confUnquote reverses confQuote.
func confUnquote(v string) string {
	v = strings.TrimSpace(v)
	if len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' {
		return v
	}
	v = v[1 : len(v)-1]
	v = strings.ReplaceAll(v, "''", "'")
	return strings.ReplaceAll(v, `\\`, `\`)
}

// conninfoQuote quotes a value for a libpq connection string.
func conninfoQuote(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", `\'`) + "'"
}

// managedSettings are written after the operator's parameters so that the
// ones replication depends on cannot be overridden by accident.
func (s *Server) renderConf(up *Upstream) (string, error) {
	host, port, err := net.SplitHostPort(s.cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("postgres listen %q: %w", s.cfg.Listen, err)
	}
	var b strings.Builder
	b.WriteString("# Managed by pgwarden: rewritten whenever PostgreSQL is started, followed or reconfigured.\n")
	fmt.Fprintf(&b, "include_if_exists = %s\n", confQuote(clusterConf))
	keys := make([]string, 0, len(s.cfg.Parameters))
	for k := range s.cfg.Parameters {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, confQuote(s.cfg.Parameters[k]))
	}
	fmt.Fprintf(&b, "listen_addresses = %s\nport = %s\n", confQuote(host), port)
	b.WriteString(s.cfg.TLS.conf())
	b.WriteString("wal_level = 'replica'\nhot_standby = on\nwal_log_hints = on\n")
	b.WriteString("password_encryption = 'scram-sha-256'\n")
	if _, ok := s.cfg.Parameters["max_wal_senders"]; !ok {
		b.WriteString("max_wal_senders = 10\n")
	}
	if _, ok := s.cfg.Parameters["max_replication_slots"]; !ok {
		b.WriteString("max_replication_slots = 10\n")
	}
	if _, ok := s.cfg.Parameters["max_slot_wal_keep_size"]; !ok {
		// A slot whose standby stopped reading (gone, or streaming from
		// elsewhere) must not fill the disk: past this the slot is
		// invalidated and the standby catches up from the archive or is
		// re-cloned.
		b.WriteString("max_slot_wal_keep_size = '4GB'\n")
	}
	if _, ok := s.cfg.Parameters["wal_keep_size"]; !ok {
		// A rewound or briefly disconnected standby finds the WAL it needs.
		b.WriteString("wal_keep_size = '256MB'\n")
	}
	if up != nil {
		b.WriteString("recovery_target_timeline = 'latest'\n")
		if up.Host != "" {
			fmt.Fprintf(&b, "primary_conninfo = %s\n", confQuote(s.conninfo(*up)))
		} else {
			b.WriteString("primary_conninfo = ''\n")
		}
		fmt.Fprintf(&b, "primary_slot_name = %s\n", confQuote(up.Slot))
	}
	b.WriteString(archiveSettings(s.cfg.Archive))
	fmt.Fprintf(&b, "include_if_exists = %s\n", confQuote(syncConf))
	return b.String(), nil
}

func (s *Server) conninfo(up Upstream) string {
	parts := []string{
		"host=" + conninfoQuote(up.Host),
		"port=" + strconv.Itoa(up.Port),
		"user=" + conninfoQuote(s.cfg.ReplUser),
		"passfile=" + conninfoQuote(s.passFile()),
		"application_name=" + conninfoQuote(s.cfg.AppName),
		"connect_timeout=3",
		"sslmode=prefer",
	}
	if s.cfg.TLS != nil {
		parts[len(parts)-1] = s.cfg.TLS.Keywords()
	}
	return strings.Join(parts, " ")
}

// renderHBA is the whole pg_hba.conf: the operator's lines, or a safe
// default: peer on the local socket, scram-sha-256 from the server's own
// networks for everyone and for replication (over TLS only when TLS is
// configured).
func (s *Server) renderHBA() string {
	lines := s.cfg.PgHBA
	if len(lines) == 0 {
		repl := s.cfg.ReplUser
		if repl == "" {
			repl = "replicator"
		}
		// With TLS on, a TCP connection without it matches no line.
		host := "host"
		if s.cfg.TLS != nil {
			host = "hostssl"
		}
		lines = []string{
			"local all all peer",
			host + " all all samenet scram-sha-256",
			host + " replication " + repl + " samenet scram-sha-256",
		}
	}
	return "# Managed by pgwarden.\n" + strings.Join(lines, "\n") + "\n"
}

// passFile is the replication password's pgpass file: beside the data
// directory, not in it, so the password is neither in primary_conninfo
// (which pg_settings shows, and every base backup copies) nor in a backup.
func (s *Server) passFile() string { return filepath.Clean(s.cfg.DataDir) + ".pgpass" }

// pgpassLine is the pgpass entry for user's password, for any server.
func pgpassLine(user, password string) string {
	esc := strings.NewReplacer(`\`, `\\`, ":", `\:`)
	return "*:*:*:" + esc.Replace(user) + ":" + esc.Replace(password) + "\n"
}

// writeConfig writes pgwarden.conf (standby settings when up is non-nil),
// pg_hba.conf, the include line, and standby.signal; and the replication
// password's pgpass file primary_conninfo names.
func (s *Server) writeConfig(up *Upstream) error {
	conf, err := s.renderConf(up)
	if err != nil {
		return err
	}
	if up != nil {
		if err := atomicfile.Write(s.passFile(), []byte(pgpassLine(s.cfg.ReplUser, s.cfg.ReplPassword)), 0o600); err != nil {
			return fmt.Errorf("write the replication pgpass file: %w", err)
		}
	}
	if err := atomicfile.Write(filepath.Join(s.cfg.DataDir, managedConf), []byte(conf), 0o600); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(s.cfg.DataDir, "pg_hba.conf"), []byte(s.renderHBA()), 0o600); err != nil {
		return err
	}
	if err := s.ensureInclude(); err != nil {
		return err
	}
	signal := filepath.Join(s.cfg.DataDir, "standby.signal")
	if up != nil {
		// A standby waits for no one; a copied or stale list from a
		// former leader must not make it block writes once promoted.
		if err := s.writeSyncConf(""); err != nil {
			return err
		}
		return os.WriteFile(signal, nil, 0o600)
	}
	if err := os.Remove(signal); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove standby.signal: %w", err)
	}
	return nil
}

// ensureInclude makes postgresql.conf include pgwarden.conf, once, last.
func (s *Server) ensureInclude() error {
	path := filepath.Join(s.cfg.DataDir, "postgresql.conf")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read postgresql.conf: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) == includeLine {
			return nil
		}
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	b = append(b, []byte(includeLine+"\n")...)
	return atomicfile.Write(path, b, 0o600)
}

// controlData is pg_controldata's output as key -> value.
type controlData map[string]string

func parseControlData(out string) controlData {
	cd := controlData{}
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok {
			cd[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return cd
}

func (cd controlData) state() string { return cd["Database cluster state"] }

// upstreamFromConninfo is host:port of a primary_conninfo ("" when unset).
func upstreamFromConninfo(ci string) string {
	var host, port string
	for _, f := range splitConninfo(ci) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "host":
			host = v
		case "port":
			port = v
		}
	}
	if host == "" {
		return ""
	}
	if port == "" {
		port = "5432"
	}
	return net.JoinHostPort(host, port)
}

// splitConninfo splits "k='v w' x=y" into "k=v w", "x=y".
func splitConninfo(ci string) []string {
	var out []string
	var cur strings.Builder
	inQ, esc := false, false
	for _, r := range ci {
		switch {
		case esc:
			cur.WriteRune(r)
			esc = false
		case r == '\\':
			esc = true
		case r == '\'':
			inQ = !inQ
		case r == ' ' && !inQ:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// SetClusterParameters writes the cluster-wide parameters (the dynamic
// configuration's; this node's own postgres.parameters still win) and, when
// they changed and the server runs, makes it re-read them. A parameter
// that needs a restart then shows as pending_restart. It reports whether
// anything changed.
func (s *Server) SetClusterParameters(ctx context.Context, params map[string]string) (bool, error) {
	var b strings.Builder
	b.WriteString("# Managed by pgwarden: the cluster-wide parameters (edit-config, PATCH /config).\n")
	for _, k := range slices.Sorted(maps.Keys(params)) {
		fmt.Fprintf(&b, "%s = %s\n", k, confQuote(params[k]))
	}
	path := filepath.Join(s.cfg.DataDir, clusterConf)
	if old, err := os.ReadFile(path); err == nil && string(old) == b.String() {
		return false, nil
	}
	if s.dataEmpty() {
		return false, nil // written once there is a data directory
	}
	if err := atomicfile.Write(path, []byte(b.String()), 0o600); err != nil {
		return false, fmt.Errorf("cluster parameters: %w", err)
	}
	if _, alive := s.postmaster(); alive {
		if err := s.Reload(ctx); err != nil {
			return true, fmt.Errorf("cluster parameters: %w", err)
		}
	}
	return true, nil
}

func (s *Server) writeSyncConf(value string) error {
	return atomicfile.Write(filepath.Join(s.cfg.DataDir, syncConf), []byte(syncConfText(value)), 0o600)
}

func syncConfText(value string) string {
	return "# Managed by pgwarden: the leader's synchronous standbys.\nsynchronous_standby_names = " + confQuote(value) + "\n"
}

// AnyStandby, alone in SetSyncStandbys' names, is any one standby.
const AnyStandby = "*"

// syncStandbyNames renders synchronous_standby_names for names: none is
// "" (commits wait for no one), [AnyStandby] is any one standby, otherwise
// all of them, in order (FIRST n).
func syncStandbyNames(names []string) string {
	switch {
	case len(names) == 0:
		return ""
	case len(names) == 1 && names[0] == AnyStandby:
		return "*"
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = `"` + strings.ReplaceAll(n, `"`, `""`) + `"`
	}
	return fmt.Sprintf("FIRST %d (%s)", len(names), strings.Join(q, ", "))
}
