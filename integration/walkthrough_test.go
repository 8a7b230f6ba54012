//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// walkthrough is the README's step-by-step block, line by line.
func walkthrough(t *testing.T) []string {
	b, err := os.ReadFile(filepath.Join(harness.ModuleRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- walkthrough")
	if !ok {
		t.Fatal("README has no walkthrough block")
	}
	_, rest, _ = strings.Cut(rest, "```sh\n")
	block, _, _ := strings.Cut(rest, "```")
	return strings.Split(strings.TrimSpace(block), "\n")
}

// TestReadmeWalkthrough runs the README's walkthrough as a new user would:
// its lines, literally, in one shell, from a directory laid out like the
// repository. The one line not run is `make build`: the harness built the
// binary under test the same way, and it is placed at bin/pgwarden.
func TestReadmeWalkthrough(t *testing.T) {
	lines := walkthrough(t)
	if lines[0] != "make build" {
		t.Fatalf("walkthrough starts with %q, want make build", lines[0])
	}
	work := harness.Dir(t, "walkthrough")
	must(t, os.MkdirAll(filepath.Join(work, "bin"), 0o755))
	bin, err := os.ReadFile(harness.Binary(t))
	must(t, err)
	must(t, os.WriteFile(filepath.Join(work, "bin", "pgwarden"), bin, 0o755))
	must(t, os.MkdirAll(filepath.Join(work, "examples"), 0o755))
	for i := 1; i <= 3; i++ {
		name := "node" + string(rune('0'+i)) + ".yaml"
		b, err := os.ReadFile(filepath.Join(harness.ModuleRoot(), "examples", name))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(work, "examples", name), b, 0o644))
	}
	// A short TMPDIR: mktemp puts the data directories, and so the Unix
	// sockets, there, and a socket path may not exceed 107 bytes.
	tmp, err := os.MkdirTemp("", "wt-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(tmp) })
	script := strings.Join(lines[1:], "\n") + "\n"
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	p := harness.Start(t, "walkthrough", cmd)
	// Whatever happens, nothing the walkthrough started outlives the test.
	t.Cleanup(func() {
		for _, l := range processesMentioning(tmp) {
			pid := strings.SplitN(l, ":", 2)[0]
			if n, err := atoi(pid); err == nil {
				_ = syscall.Kill(n, syscall.SIGKILL)
			}
		}
	})
	if !p.Wait(5 * time.Minute) {
		t.Fatalf("walkthrough did not finish in 5 minutes:\n%s", out.String())
	}
	text := out.String()
	t.Logf("walkthrough output:\n%s", text)
	if !p.Exited() || p.Cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("walkthrough failed: %v", p.Cmd.ProcessState)
	}
	// Two list tables, each with a leader and two streaming replicas, and
	// the leader changed by the switchover.
	leaderRe := regexp.MustCompile(`(?m)^(node\d)\s+\S+\s+leader\s+running`)
	leaders := leaderRe.FindAllStringSubmatch(text, -1)
	if len(leaders) != 2 || strings.Count(text, "streaming") < 4 {
		t.Fatalf("want two tables with a leader and two streaming replicas:\n%s", text)
	}
	if leaders[0][1] == leaders[1][1] {
		t.Fatalf("switchover did not change the leader (%s)", leaders[0][1])
	}
	codes := regexp.MustCompile(`(?m)^(\d{3}) (\d{3}) (\d{3}) $`).FindStringSubmatch(text)
	if codes == nil || strings.Count(codes[0], "200") != 1 {
		t.Fatalf("want exactly one 200 on /primary among three nodes: %q", codes)
	}
	if left := processesMentioning(tmp); len(left) > 0 {
		t.Fatalf("processes left after the walkthrough's kill: %v", left)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("walkthrough left %d entries in its temp dir", len(ents))
	}
}

func atoi(s string) (int, error) {
	var n int
	_, err := fmt.Sscan(s, &n)
	return n, err
}
