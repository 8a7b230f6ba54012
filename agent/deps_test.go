package agent

import (
	"os/exec"
	"strings"
	"testing"
)

// The HA loop reads the cluster through dcs types and talks to PostgreSQL
// through its Postgres interface: it links neither the etcd client (nor
// gRPC under it) nor pgx.
func TestAgentLinksNoClient(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"google.golang.org/grpc", "go.etcd.io/etcd/client", "github.com/jackc/pgx"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("agent links %s", dep)
			}
		}
	}
}
