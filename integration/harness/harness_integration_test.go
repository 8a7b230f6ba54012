//go:build integration

package harness

import (
	"net"
	"os"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestRunsUnprivileged(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Fatal("integration tests run as root: PostgreSQL would refuse to start")
	}
}

func TestEtcdStartsAndStops(t *testing.T) {
	e := StartEtcd(t)
	c, err := net.DialTimeout("tcp", e.Endpoint, time.Second)
	if err != nil {
		t.Fatalf("dial etcd: %v", err)
	}
	c.Close()
	if err := e.StopEtcd(); err != nil {
		t.Logf("etcd exit: %v", err)
	}
	if !e.Exited() {
		t.Fatal("etcd still running after stop")
	}
}
