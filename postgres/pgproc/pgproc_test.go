package pgproc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParsePIDFile(t *testing.T) {
	pf, err := parsePIDFile("4242\n/var/lib/pg\n1764580000\n5432\n/tmp\n127.0.0.1\n  5432001     12\nready   \n")
	if err != nil {
		t.Fatal(err)
	}
	if pf.PID != 4242 || pf.DataDir != "/var/lib/pg" || pf.Port != 5432 || pf.SocketDir != "/tmp" ||
		pf.Listen != "127.0.0.1" || pf.Status != "ready" || pf.Start.Unix() != 1764580000 {
		t.Fatalf("parsed %+v", pf)
	}
	// Just started: only the first lines are written yet.
	if pf, err := parsePIDFile("77\n/d\n"); err != nil || pf.PID != 77 || pf.Status != "" {
		t.Fatalf("partial file: %+v %v", pf, err)
	}
	for _, bad := range []string{"", "x\n", "1\n", "-5\n"} {
		if _, err := parsePIDFile(bad); err == nil {
			t.Errorf("parsePIDFile(%q) accepted", bad)
		}
	}
}

// fakeServer starts a stand-in for a postmaster in dir with two children
// that each call setsid(), as PostgreSQL's backends do, and writes a
// postmaster.pid naming it.
func fakeServer(t *testing.T) (dir string, pm *exec.Cmd) {
	t.Helper()
	dir = t.TempDir()
	pm = exec.Command("sh", "-c", "setsid sleep 60 & setsid sleep 60 & exec sleep 60")
	pm.Dir = dir
	pm.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := pm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pm.Process.Kill(); _ = pm.Wait() })
	writePIDFile(t, dir, pm.Process.Pid)
	// Until both children have called setsid().
	deadline := time.Now().Add(5 * time.Second)
	for {
		ps, _ := Processes(dir)
		sessions := 0
		for _, p := range ps {
			if sid, err := unix.Getsid(p); err == nil && sid == p {
				sessions++
			}
		}
		if len(ps) == 3 && sessions == 2 {
			return dir, pm
		}
		if time.Now().After(deadline) {
			t.Fatalf("fake server: %d processes, %d session leaders", len(ps), sessions)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitN waits until n processes work in dir.
func waitN(t *testing.T, dir string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ps, err := Processes(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == n {
			return ps
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes in %s, want %d", len(ps), dir, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFenceKillsSessionLeaders(t *testing.T) {
	dir, pm := fakeServer(t)
	// What the old watchdog did: SIGKILL to the postmaster's group. The
	// setsid children are in groups of their own and survive it.
	_ = syscall.Kill(-pm.Process.Pid, syscall.SIGKILL)
	_ = pm.Wait()
	if left := waitN(t, dir, 2); len(left) != 2 {
		t.Fatalf("group kill left %v", left)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := Fence(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Killed) != 2 || rep.Postmaster != 0 {
		t.Fatalf("fence report %+v, want the 2 orphans killed and no postmaster", rep)
	}
	if ps, _ := Processes(dir); len(ps) != 0 {
		t.Fatalf("alive after fence: %v", ps)
	}
}

func TestFenceWithPostmaster(t *testing.T) {
	dir, pm := fakeServer(t)
	exited := make(chan struct{})
	go func() { _ = pm.Wait(); close(exited) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := Fence(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Postmaster != pm.Process.Pid || len(rep.Killed) != 3 {
		t.Fatalf("fence report %+v, want postmaster %d and 3 killed", rep, pm.Process.Pid)
	}
	// Its two children die from its own list, before the scan of /proc.
	if rep.Early != 2 || rep.EarlyTook <= 0 || rep.EarlyTook > rep.Took {
		t.Fatalf("fence report %+v, want the postmaster's 2 children killed before the scan", rep)
	}
	t.Logf("children killed %s after the start, all gone after %s", rep.EarlyTook, rep.Took)
	if ps, _ := Processes(dir); len(ps) != 0 {
		t.Fatalf("alive after fence: %v", ps)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("postmaster stand-in not dead")
	}
	// Nothing left: a second fence is a no-op, not an error.
	if rep, err := Fence(ctx, dir); err != nil || len(rep.Killed) != 0 {
		t.Fatalf("second fence: %+v %v", rep, err)
	}
}

func TestZombieIsNotAlive(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if !Alive(pid) {
		t.Fatal("running process reported dead")
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	// Not reaped yet: a zombie, which kill(pid, 0) still finds.
	deadline := time.Now().Add(5 * time.Second)
	for Alive(pid) {
		if time.Now().After(deadline) {
			t.Fatal("killed, unreaped process still reported alive")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("expected a zombie that kill(0) still finds")
	}
	_ = cmd.Wait()
}

func TestPostmasterPIDReuse(t *testing.T) {
	dir := t.TempDir()
	// A live process working elsewhere: a stale pid file whose PID was
	// reused must not read as a running server.
	other := exec.Command("sleep", "60")
	other.Dir = t.TempDir()
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Process.Kill(); _ = other.Wait() }()
	pid := fmt.Sprintf("%d\n%s\n", other.Process.Pid, dir)
	if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(pid), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, alive, err := Postmaster(dir); err != nil || alive {
		t.Fatalf("reused PID read as a live postmaster (%v)", err)
	}
	if _, _, err := Postmaster(t.TempDir()); err != errNoPIDFile {
		t.Fatalf("no pid file: %v", err)
	}
}

func TestWatchExit(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, stop := WatchExit(cmd.Process.Pid)
	defer stop()
	select {
	case <-exited:
		t.Fatal("exit reported for a live process")
	case <-time.After(50 * time.Millisecond):
	}
	killed := time.Now()
	_ = cmd.Process.Kill()
	select {
	case <-exited:
		t.Logf("exit seen %s after the kill", time.Since(killed))
	case <-time.After(2 * time.Second):
		t.Fatal("exit not seen")
	}
	_ = cmd.Wait()
	stop() // twice is fine
	// Stopping a watch of a live process ends it without a report.
	live := exec.Command("sleep", "60")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = live.Process.Kill(); _ = live.Wait() }()
	ch, stop2 := WatchExit(live.Process.Pid)
	stop2()
	select {
	case <-ch:
		t.Fatal("stopped watch reported an exit")
	case <-time.After(50 * time.Millisecond):
	}
}

// TestStrikerNeedsNoLookup: once refreshed, a Striker stops the postmaster
// and kills its children through pidfds even when postmaster.pid is gone
// and nothing is looked up at the time of the strike.
func TestStrikerNeedsNoLookup(t *testing.T) {
	dir, pm := fakeServer(t)
	s := NewStriker(dir)
	defer s.Close()
	if n := s.Strike(); n != 0 {
		t.Fatalf("strike before any refresh signalled %d", n)
	}
	s.Refresh()
	if err := os.Remove(filepath.Join(dir, "postmaster.pid")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n := s.Strike()
	took := time.Since(start)
	if n != 2 {
		t.Fatalf("strike signalled %d children, want 2", n)
	}
	t.Logf("struck 2 children in %s", took)
	waitN(t, dir, 1) // only the postmaster is left...
	// SIGSTOP is delivered asynchronously: wait for the state to show it.
	var st byte
	var err error
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if st, err = procState(pm.Process.Pid); err == nil && st == 'T' {
			break
		}
	}
	if err != nil || st != 'T' {
		t.Fatalf("postmaster state %q (%v), want stopped", st, err)
	}
	// ...and a refresh that finds no postmaster.pid lets go of it.
	s.Refresh()
	if n := s.Strike(); n != 0 {
		t.Fatalf("strike after the pid file went signalled %d", n)
	}
	_ = syscall.Kill(pm.Process.Pid, syscall.SIGKILL)
	_ = syscall.Kill(pm.Process.Pid, syscall.SIGCONT)
}

// TestStrikerIgnoresOtherDirectories: a child of the postmaster working
// elsewhere is not the server's, and is left alone.
func TestStrikerIgnoresOtherDirectories(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	pm := exec.Command("sh", "-c", "(cd "+other+" && exec sleep 60) & exec sleep 60")
	pm.Dir = dir
	if err := pm.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pm.Process.Kill(); _ = pm.Wait() })
	writePIDFile(t, dir, pm.Process.Pid)
	waitN(t, other, 1)
	s := NewStriker(dir)
	defer s.Close()
	s.Refresh()
	if n := s.Strike(); n != 0 {
		t.Fatalf("strike signalled %d processes working in another directory", n)
	}
	if len(waitN(t, other, 1)) != 1 {
		t.Fatal("the child working elsewhere died")
	}
	_ = syscall.Kill(pm.Process.Pid, syscall.SIGCONT)
}

// writePIDFile writes a postmaster.pid naming pid as dir's ready postmaster.
func writePIDFile(t *testing.T, dir string, pid int) {
	t.Helper()
	text := fmt.Sprintf("%d\n%s\n%d\n5432\n\n\n\nready\n", pid, dir, time.Now().Unix())
	if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}
