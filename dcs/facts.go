package dcs

import (
	"net"
	"net/url"
	"strconv"

	"github.com/pgwarden/pgwarden/wal"
)

// Each fact that several parts read about a member has its home here.

// Behind is how many bytes pos is behind the leader's position (0 when it
// is not behind).
func Behind(leader, pos wal.LSN) uint64 {
	if leader > pos {
		return uint64(leader - pos)
	}
	return 0
}

// ReceiveLag is how far m's received WAL is behind the leader's last
// published position: what a failover weighs (maximum_lag_on_failover).
func (c *Cluster) ReceiveLag(m Member) uint64 { return Behind(c.Status.LSN, m.WALPosition) }

// ReplayLag is how far m's replayed WAL is behind the leader's last
// published position: what health checks and operators see. A member that
// publishes no replayed position counts its received one.
func (c *Cluster) ReplayLag(m Member) uint64 {
	pos := m.ReplayedLSN
	if pos == 0 {
		pos = m.WALPosition
	}
	return Behind(c.Status.LSN, pos)
}

// RefusesFailover: the member is never promoted (nofailover set, in its
// record or as a Patroni-style tag).
func (m Member) RefusesFailover() bool { return m.NoFailover || m.Tags["nofailover"] == "true" }

// ConnURL is the conn_url a member publishes for its PostgreSQL at
// host:port (Patroni's format).
func ConnURL(hostPort string) string { return "postgres://" + hostPort + "/postgres" }

// Addr is host:port of a member's conn_url (postgres://[user@]host:port/db);
// a bare host:port is returned as is.
func Addr(connURL string) string {
	u, err := url.Parse(connURL)
	if err != nil || u.Host == "" {
		return connURL
	}
	return u.Host
}

// HostPort splits a conn_url's address (port 0 when it has none).
func HostPort(connURL string) (string, int) {
	a := Addr(connURL)
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return a, 0
	}
	port, _ := strconv.Atoi(p)
	return h, port
}
