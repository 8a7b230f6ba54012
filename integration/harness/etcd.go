package harness

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Etcd is a single-member etcd started by a test.
type Etcd struct {
	*Proc
	// Endpoint is host:port of the client listener.
	Endpoint string
	DataDir  string
}

// StartEtcd starts etcd on free loopback ports and waits until it is healthy.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin := LookPath(t, "etcd", "etcd-server")
	dir := Dir(t, "etcd")
	client, peer := Port(t), Port(t)
	cu := fmt.Sprintf("http://127.0.0.1:%d", client)
	pu := fmt.Sprintf("http://127.0.0.1:%d", peer)
	cmd := exec.Command(bin,
		"--name", "test",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", cu, "--advertise-client-urls", cu,
		"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
		"--initial-cluster", "test="+pu,
		"--log-level", "warn",
	)
	e := &Etcd{Proc: Start(t, "etcd", cmd), Endpoint: fmt.Sprintf("127.0.0.1:%d", client), DataDir: dir}
	hc := &http.Client{Timeout: time.Second}
	WaitFor(t, 20*time.Second, "etcd healthy", func() (bool, error) {
		if e.Exited() {
			return false, fmt.Errorf("etcd exited")
		}
		resp, err := hc.Get(cu + "/health")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Errorf("health %d", resp.StatusCode)
	})
	return e
}

// StopEtcd stops etcd with SIGTERM.
func (e *Etcd) StopEtcd() error { return e.Stop(syscall.SIGTERM, 10*time.Second) }
