//go:build integration

package integration

import (
	"bufio"
	"fmt"
	"io"
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

// processesMentioning lists the PIDs whose command line contains s.
func processesMentioning(s string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), s) {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// TestDemo runs `pgwarden demo` as a newcomer would, waits for its ready
// line, checks the cluster through its REST API, interrupts it and checks
// that nothing it started or created is left.
func TestDemo(t *testing.T) {
	parent := harness.Dir(t, "demo")
	dir := filepath.Join(parent, "cluster")
	cmd := exec.Command(harness.Binary(t), "demo", "--dir", dir)
	out, w := io.Pipe()
	cmd.Stdout = w
	p := harness.Start(t, "demo", cmd)
	go func() {
		<-p.Done()
		w.Close()
	}()
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var transcript []string
	restRe := regexp.MustCompile(`REST (http://127\.0\.0\.1:\d+)`)
	var apis []string
	deadline := time.After(4 * time.Minute)
	ready := false
	for !ready {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("demo exited before ready:\n%s", strings.Join(transcript, "\n"))
			}
			transcript = append(transcript, l)
			if m := restRe.FindStringSubmatch(l); m != nil {
				apis = append(apis, m[1])
			}
			ready = strings.HasPrefix(l, "ready:")
		case <-deadline:
			t.Fatalf("no ready line within 4 minutes:\n%s", strings.Join(transcript, "\n"))
		}
	}
	go func() {
		for range lines { // keep draining the live view
		}
	}()
	if len(apis) != 3 {
		t.Fatalf("demo printed %d REST URLs, want 3:\n%s", len(apis), strings.Join(transcript, "\n"))
	}
	primaries, replicas := 0, 0
	for _, api := range apis {
		for path, count := range map[string]*int{"/primary": &primaries, "/replica": &replicas} {
			resp, err := httpc.Get(api + path)
			if err != nil {
				t.Fatalf("GET %s%s: %v", api, path, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				*count++
			}
		}
	}
	if primaries != 1 || replicas != 2 {
		t.Fatalf("demo cluster: %d primaries and %d replicas answer 200, want 1 and 2", primaries, replicas)
	}
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if !p.Wait(90 * time.Second) {
		t.Fatal("demo did not stop within 90s of SIGINT")
	}
	harness.WaitFor(t, 10*time.Second, "no process of the demo left", func() (bool, error) {
		left := processesMentioning(dir)
		return len(left) == 0, fmt.Errorf("left running: %v", left)
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		ents, _ := os.ReadDir(dir)
		t.Fatalf("demo directory %s still exists (%v): %d entries", dir, err, len(ents))
	}
}
