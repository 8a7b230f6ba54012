//go:build integration

package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// TestClusterParametersReachEveryNode: parameters set in the dynamic
// configuration (PATCH /config, as edit-config does) reach every node: a
// reloadable one takes effect at once on each, a restart-only one shows as
// pending_restart until that node is restarted; a node's own
// postgres.parameters win over the cluster's. (Before: stored and
// validated, never written to PostgreSQL.)
func TestClusterParametersReachEveryNode(t *testing.T) {
	c := newCluster(t, clusterOpts{nodes: 2, pgExtra: "    maintenance_work_mem: 70MB\n"})
	p := c.primary(90 * time.Second)
	c.waitReplicas(60*time.Second, p)
	if code, body := p.post("PATCH", "/config", `{"parameters": {"work_mem": "7MB", "max_prepared_transactions": "5", "maintenance_work_mem": "33MB"}}`); code != 200 {
		t.Fatalf("PATCH /config: %d %s", code, body)
	}
	show := func(n *node, name string) string {
		var v string
		if err := n.queryRow("SHOW "+name, &v); err != nil { // names are the test's constants
			return "error: " + err.Error()
		}
		return v
	}
	for _, n := range c.nodes {
		harness.WaitFor(t, 30*time.Second, n.name+": work_mem from the cluster's parameters", func() (bool, error) {
			v := show(n, "work_mem")
			return v == "7MB", fmt.Errorf("work_mem = %s", v)
		})
		if v := show(n, "maintenance_work_mem"); v != "70MB" {
			t.Fatalf("%s: maintenance_work_mem = %s; the node's own parameter must win", n.name, v)
		}
		harness.WaitFor(t, 30*time.Second, n.name+": pending_restart for max_prepared_transactions", func() (bool, error) {
			pending, _ := n.status()["pending_restart"].(bool)
			return pending && show(n, "max_prepared_transactions") == "0", fmt.Errorf("pending_restart %v, max_prepared_transactions %s", pending, show(n, "max_prepared_transactions"))
		})
	}
	r := c.nodes[0]
	if r == p {
		r = c.nodes[1]
	}
	if code, body := r.post("POST", "/restart", ""); code != 200 {
		t.Fatalf("restart %s: %d %s", r.name, code, body)
	}
	harness.WaitFor(t, 60*time.Second, r.name+": max_prepared_transactions after its restart", func() (bool, error) {
		v := show(r, "max_prepared_transactions")
		pending, _ := r.status()["pending_restart"].(bool)
		return v == "5" && !pending, fmt.Errorf("max_prepared_transactions %s, pending_restart %v", v, pending)
	})
}
