package agent

import (
	"testing"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

// TestPeerObserve: how the election reads a peer's word. A primary whose
// server may be running holds the race back whatever its agent can say of
// it; only a running server's WAL position counts, the furthest of the
// three it reports.
func TestPeerObserve(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    PeerReport
		want Peer
	}{
		{"running replica", PeerReport{Role: "replica", State: "running", Timeline: 3, ClusterUnlocked: true, Location: 10, Received: 30, Replayed: 20},
			Peer{Reachable: true, Running: true, Timeline: 3, WAL: 30}},
		{"replica that still saw a leader", PeerReport{Role: "replica", State: "running", Timeline: 3, Replayed: 20},
			Peer{Reachable: true, Running: true, Timeline: 3, WAL: 20, Stale: true}},
		{"unresponsive primary", PeerReport{Role: "primary", State: "unresponsive", Timeline: 4, ClusterUnlocked: true, Location: 99},
			Peer{Reachable: true, Primary: true, Mute: true}},
		{"stopping master", PeerReport{Role: "master", State: "stopping", ClusterUnlocked: true},
			Peer{Reachable: true, Primary: true}},
		{"stopped primary", PeerReport{Role: "primary", State: "stopped", ClusterUnlocked: true, Location: 99},
			Peer{Reachable: true}},
		{"starting replica", PeerReport{Role: "replica", State: "starting", ClusterUnlocked: true, Received: 5},
			Peer{Reachable: true, Mute: true}},
		{"unguarded", PeerReport{Role: "replica", State: "running", Unguarded: true, ClusterUnlocked: true, Received: wal.LSN(7)},
			Peer{Reachable: true, Running: true, Unguarded: true, WAL: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Peer
			p.Observe(tc.r)
			if p != tc.want {
				t.Errorf("Observe(%+v) = %+v; want %+v", tc.r, p, tc.want)
			}
		})
	}
}

// A member refusing failover by its record or only by a Patroni-style tag
// is never a switchover target.
func TestReplicaIneligibleNoFailover(t *testing.T) {
	base := dcs.Member{Name: "r", Role: "replica", State: "running", Streaming: true, Priority: 100}
	c := &dcs.Cluster{}
	if why := replicaIneligible(c, base, false); why != "" {
		t.Fatalf("a healthy replica is ineligible: %s", why)
	}
	flagged, tagged := base, base
	flagged.NoFailover = true
	tagged.Tags = map[string]string{"nofailover": "true"}
	for _, m := range []dcs.Member{flagged, tagged} {
		if why := replicaIneligible(c, m, false); why != "has priority 0 or nofailover" {
			t.Errorf("replicaIneligible(%+v) = %q; want nofailover", m, why)
		}
	}
}
