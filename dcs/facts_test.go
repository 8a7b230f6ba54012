package dcs_test

import (
	"testing"

	"github.com/pgwarden/pgwarden/dcs"
)

func TestMemberFacts(t *testing.T) {
	c := &dcs.Cluster{Status: dcs.Status{LSN: 1000}}
	for _, tc := range []struct {
		m               dcs.Member
		receive, replay uint64
	}{
		{dcs.Member{WALPosition: 900, ReplayedLSN: 800}, 100, 200},
		{dcs.Member{WALPosition: 900}, 100, 100}, // no replayed position: the received one
		{dcs.Member{WALPosition: 1200, ReplayedLSN: 1100}, 0, 0},
	} {
		if got := c.ReceiveLag(tc.m); got != tc.receive {
			t.Errorf("%+v: receive lag %d, want %d", tc.m, got, tc.receive)
		}
		if got := c.ReplayLag(tc.m); got != tc.replay {
			t.Errorf("%+v: replay lag %d, want %d", tc.m, got, tc.replay)
		}
	}
	for in, want := range map[string]string{
		"postgres://10.0.0.1:5432/postgres": "10.0.0.1:5432",
		"postgresql://rep@db1:5433/x":       "db1:5433",
		"127.0.0.1:5434":                    "127.0.0.1:5434",
		"postgres://[::1]:5435/postgres":    "[::1]:5435",
	} {
		if got := dcs.Addr(in); got != want {
			t.Errorf("Addr(%q) = %q, want %q", in, got, want)
		}
	}
	if h, p := dcs.HostPort("postgres://[::1]:5435/postgres"); h != "::1" || p != 5435 {
		t.Errorf("HostPort = %q %d", h, p)
	}
	if h, p := dcs.HostPort("db1"); h != "db1" || p != 0 {
		t.Errorf("HostPort of a bare host = %q %d", h, p)
	}
}

// A conn_url a member publishes reads back as the address it was made of.
func TestConnURLRoundTrip(t *testing.T) {
	for _, hp := range []string{"10.0.0.5:5432", "db-1.example:6432", "[::1]:5433"} {
		u := dcs.ConnURL(hp)
		h, p := dcs.HostPort(u)
		if dcs.Addr(u) != hp || p == 0 || h == "" {
			t.Errorf("ConnURL(%q) = %q reads back as %q (host %q port %d)", hp, u, dcs.Addr(u), h, p)
		}
	}
}
