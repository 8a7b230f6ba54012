//go:build integration

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// TestFailingBootstrapBacksOff: initdb fails on a real node, every time
// (a wrapper in its bin_dir). The agent retries after loop_wait, doubling
// up to the ttl, logs the error once, and /patroni says what fails; once
// initdb works again the node comes up. (Before: about 140 attempts a
// second, each taking part in the initialize race, and 2.6 MB of log in
// 40 s.)
func TestFailingBootstrapBacksOff(t *testing.T) {
	real := harness.PgBinDir(t)
	bin := harness.Dir(t, "bin")
	ents, err := os.ReadDir(real)
	must(t, err)
	for _, e := range ents {
		if e.Name() != "initdb" {
			must(t, os.Symlink(filepath.Join(real, e.Name()), filepath.Join(bin, e.Name())))
		}
	}
	count := filepath.Join(bin, "attempts")
	failing := fmt.Sprintf("#!/bin/sh\necho x >> %s\necho 'initdb: simulated failure: no space left on device' >&2\nexit 1\n", count)
	must(t, os.WriteFile(filepath.Join(bin, "initdb"), []byte(failing), 0o755))
	attempts := func() int {
		b, _ := os.ReadFile(count)
		return strings.Count(string(b), "x")
	}

	c := newCluster(t, clusterOpts{nodes: 1, ttl: 10, binDir: bin})
	n := c.nodes[0]
	harness.WaitFor(t, 60*time.Second, "a first bootstrap attempt", func() (bool, error) {
		return attempts() > 0, fmt.Errorf("%d attempts", attempts())
	})
	const window = 20 * time.Second
	a0 := attempts()
	_, off := n.log.Since(0)
	time.Sleep(window) // the measurement window itself
	tried := attempts() - a0
	logged, _ := n.log.Since(off)
	lines := strings.Count(logged, "\n")
	t.Logf("in %s: %d bootstrap attempts, %d log lines", window, tried, lines)
	// Back-off delays 1, 2, 4, 8, 10 s: at most 5 starts in any 20 s.
	if tried < 1 || tried > 6 {
		t.Fatalf("%d bootstrap attempts in %s, want 1-6 (backing off to the ttl):\n%s", tried, window, logged)
	}
	if lines > 4*tried+6 {
		t.Fatalf("%d log lines in %s for %d attempts:\n%s", lines, window, tried, logged)
	}
	harness.WaitFor(t, 15*time.Second, "/patroni naming the failing action", func() (bool, error) {
		st := n.status()
		le, _ := st["last_error"].(map[string]any)
		if le == nil {
			return false, fmt.Errorf("no last_error in %v", st)
		}
		msg, _ := le["error"].(string)
		return le["action"] == "bootstrap" && strings.Contains(msg, "no space left on device"), fmt.Errorf("last_error %v", le)
	})

	// Fixed: the next attempt (within a ttl) creates the cluster.
	must(t, os.Remove(filepath.Join(bin, "initdb")))
	must(t, os.Symlink(filepath.Join(real, "initdb"), filepath.Join(bin, "initdb")))
	c.primary(60 * time.Second)
	harness.WaitFor(t, 15*time.Second, "last_error gone", func() (bool, error) {
		st := n.status()
		return st["last_error"] == nil, fmt.Errorf("last_error %v", st["last_error"])
	})
}
