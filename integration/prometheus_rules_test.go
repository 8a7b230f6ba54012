//go:build integration

package integration

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPrometheusRules: examples/prometheus-rules.yml loads in Prometheus
// (promtool check rules) and its backup alerts fire when they should and
// not before (promtool test rules on synthetic series).
func TestPrometheusRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (sh scripts/deps.sh does)")
	}
	for _, args := range [][]string{
		{"check", "rules", "../examples/prometheus-rules.yml"},
		{"test", "rules", "testdata/prometheus-rules-test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("promtool %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
	}
}
