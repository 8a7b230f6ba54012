package watchdog

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// victim is a process in its own group standing in for a postmaster, with
// a postmaster.pid naming it.
func victim(t *testing.T) (dir string, exited <-chan struct{}) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	dir = t.TempDir()
	pid := fmt.Sprintf("%d\n%s\n", cmd.Process.Pid, dir)
	if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(pid), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, done
}

func runDog(t *testing.T, dir string) (io.WriteCloser, <-chan int) {
	r, w := io.Pipe()
	code := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	d := &dog{dataDir: dir, log: hclog.NewNullLogger()}
	go func() { code <- d.run(ctx, r) }()
	return w, code
}

func send(t *testing.T, w io.Writer, line string) {
	t.Helper()
	if _, err := io.WriteString(w, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

func TestFencesWhenNotFed(t *testing.T) {
	dir, exited := victim(t)
	w, _ := runDog(t, dir)
	start := time.Now()
	send(t, w, "arm 200")
	select {
	case <-exited:
		if took := time.Since(start); took < 200*time.Millisecond {
			t.Fatalf("fenced after %s, before the 200ms deadline", took)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("postmaster not killed 3s after a 200ms deadline")
	}
}

func TestFeedingKeepsItAlive(t *testing.T) {
	dir, exited := victim(t)
	w, _ := runDog(t, dir)
	// Re-arm 300ms deadlines every 50ms for a second: never fenced.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for range 20 {
		send(t, w, "arm 300")
		select {
		case <-exited:
			t.Fatal("fenced although fed")
		case <-tick.C:
		}
	}
	send(t, w, "disarm")
	select {
	case <-exited:
		t.Fatal("fenced after disarm")
	case <-time.After(500 * time.Millisecond):
	}
}

func TestAgentDeathWhileArmedFencesAtDeadline(t *testing.T) {
	dir, exited := victim(t)
	w, code := runDog(t, dir)
	send(t, w, "arm 300")
	w.Close() // the agent died
	select {
	case <-exited:
	case <-time.After(3 * time.Second):
		t.Fatal("not fenced after the agent died while armed")
	}
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit %d", c)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("watchdog did not exit after fencing an orphaned primary")
	}
}

func TestAgentDeathWhileDisarmedExits(t *testing.T) {
	dir, exited := victim(t)
	w, code := runDog(t, dir)
	send(t, w, "arm 60000")
	send(t, w, "disarm")
	w.Close()
	select {
	case <-code:
	case <-time.After(2 * time.Second):
		t.Fatal("watchdog did not exit")
	}
	select {
	case <-exited:
		t.Fatal("replica killed")
	default:
	}
}

func TestMainNeedsDataDir(t *testing.T) {
	if c := Main(context.Background(), nil, nil, io.Discard); c != 2 {
		t.Fatalf("exit %d without --data-dir; want 2", c)
	}
}
