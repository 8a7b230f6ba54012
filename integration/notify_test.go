//go:build integration

package integration

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// TestSystemdNotify: started as a Type=notify unit would start it (a
// NOTIFY_SOCKET the test listens on; PID 1 here is not systemd), the agent
// reports STATUS= while starting and READY=1 once its first HA loop ran,
// by which time its /liveness answers 200.
func TestSystemdNotify(t *testing.T) {
	path := filepath.Join(harness.Dir(t, "systemd"), "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	must(t, err)
	defer sock.Close()
	// etcd first, without the socket: only the agent is a unit here.
	etcd := harness.StartEtcd(t)
	t.Setenv("NOTIFY_SOCKET", path)
	c := newCluster(t, clusterOpts{nodes: 1, etcd: etcd})
	var got []string
	deadline := time.Now().Add(60 * time.Second)
	buf := make([]byte, 4096)
	for len(got) == 0 || !strings.Contains(got[len(got)-1], "READY=1") {
		if time.Now().After(deadline) {
			t.Fatalf("no READY=1 within 60 s; got %q", got)
		}
		_ = sock.SetReadDeadline(deadline)
		n, err := sock.Read(buf)
		if err != nil {
			t.Fatalf("read the notify socket: %v (got %q)", err, got)
		}
		got = append(got, string(buf[:n]))
		if len(got) > 100 {
			t.Fatalf("too many messages without READY=1: %q", got)
		}
	}
	if code := c.nodes[0].probe("/liveness"); code != 200 {
		t.Fatalf("READY=1 sent but /liveness = %d", code)
	}
	// PostgreSQL (built with systemd support) would send its own READY=1
	// if the agent left the socket in its children's environment.
	for i, m := range got {
		if !strings.HasPrefix(m, "STATUS=starting") && !(i == len(got)-1 && strings.HasPrefix(m, "READY=1\nSTATUS=running")) {
			t.Errorf("message %d %q is not the agent's", i, m)
		}
	}
}
