package proc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStopAndGroup: Stop ends a process by its signal; one that ignores it
// is killed after the timeout; KillGroup takes the children with it.
func TestStopAndGroup(t *testing.T) {
	p, err := Start("sleeper", exec.Command("sleep", "30"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(syscall.SIGTERM, 5*time.Second); err == nil || !p.Exited() {
		t.Fatalf("stop by SIGTERM: exited %v, err %v (want the signal's exit error)", p.Exited(), err)
	}

	ready := filepath.Join(t.TempDir(), "ready")
	stubborn, err := Start("stubborn", exec.Command("sh", "-c", "trap '' TERM; : > "+ready+"; sleep 30"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The signal must find the trap set, not the shell still starting.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stubborn shell never set its trap")
		}
	}
	start := time.Now()
	if err := stubborn.Stop(syscall.SIGTERM, 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "did not exit") {
		t.Fatalf("a process ignoring SIGTERM: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Stop took %s", took)
	}
	stubborn.KillGroup() // its sleep outlived the shell

	pidFile := filepath.Join(t.TempDir(), "child")
	ran := make(chan struct{})
	parent, err := Start("parent", exec.Command("sh", "-c", "sleep 30 & echo $! > "+pidFile+"; wait"), func() { close(ran) })
	if err != nil {
		t.Fatal(err)
	}
	var child int
	for deadline := time.Now().Add(5 * time.Second); child == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(pidFile)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if child == 0 {
		t.Fatal("the child never started")
	}
	parent.KillGroup()
	if !parent.Wait(5 * time.Second) {
		t.Fatal("parent alive after KillGroup")
	}
	select {
	case <-ran:
	default:
		t.Fatal("afterExit did not run before Done")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat")
		if err != nil || strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("child %d outlived KillGroup", child)
		}
	}
}
