package watchdog

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/postgres/pgproc"
)

// TestMain makes this test binary serve as `pgwarden watchdog` for the
// Client tests.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "watchdog" {
		os.Exit(Main(context.Background(), os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	if len(os.Args) == 4 && os.Args[1] == "handback-probe" {
		// Stands in for `pgwarden handback`: records how many processes
		// of the data directory still ran when it was called, and the
		// lease it was told on its stdin ("lease HEX").
		ps, err := pgproc.Processes(os.Args[2])
		if err != nil {
			os.Exit(1)
		}
		var lease string
		if _, err := fmt.Fscanf(os.Stdin, "lease %s\n", &lease); err != nil {
			os.Exit(2)
		}
		_ = os.WriteFile(os.Args[3], []byte(strconv.Itoa(len(ps))+" "+lease), 0o600)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// server is a stand-in for a running PostgreSQL in dir: a "postmaster"
// with two children that each call setsid(), as backends do.
type server struct {
	dir    string
	pm     *exec.Cmd
	exited chan struct{}
}

func startServer(t *testing.T, dir string) *server {
	t.Helper()
	srv := spawnServer(t, dir)
	waitProcs(t, dir, 3, 5*time.Second)
	return srv
}

// spawnServer starts the stand-in without waiting for it to be up.
func spawnServer(t *testing.T, dir string) *server {
	t.Helper()
	pm := exec.Command("sh", "-c", "setsid sleep 60 & setsid sleep 60 & exec sleep 60")
	pm.Dir = dir
	pm.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := pm.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = pm.Wait(); close(exited) }()
	t.Cleanup(func() {
		if ps, _ := pgproc.Processes(dir); len(ps) > 0 {
			for _, p := range ps {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
	})
	pid := fmt.Sprintf("%d\n%s\n%d\n5432\n\n\n\nready\n", pm.Process.Pid, dir, time.Now().Unix())
	if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(pid), 0o600); err != nil {
		t.Fatal(err)
	}
	return &server{dir: dir, pm: pm, exited: exited}
}

// waitProcs waits until n processes work in dir and returns when.
func waitProcs(t *testing.T, dir string, n int, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ps, err := pgproc.Processes(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == n {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes in %s after %s, want %d", len(ps), dir, within, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runDog runs a watchdog loop on dir with commands from the returned pipe.
func runDog(t *testing.T, dir string) (io.WriteCloser, <-chan int) {
	t.Helper()
	return runDogHandback(t, dir, nil)
}

// runDogHandback is runDog with a hand-back command.
func runDogHandback(t *testing.T, dir string, handback []string) (io.WriteCloser, <-chan int) {
	t.Helper()
	r, w := io.Pipe()
	code := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	d := &dog{dataDir: dir, log: hclog.New(&hclog.LoggerOptions{Output: hclog.DefaultOutput, Level: hclog.Warn}),
		out: io.Discard, fence: pgproc.Fence, now: monoNow, handback: handback}
	go func() { code <- d.run(ctx, r) }()
	return w, code
}

func send(t *testing.T, w io.Writer, line string) {
	t.Helper()
	if _, err := io.WriteString(w, line+"\n"); err != nil {
		t.Fatal(err)
	}
}

func armIn(d time.Duration) string {
	return "arm " + strconv.FormatInt(monoNow()+int64(d), 10)
}

// TestFenceLeavesNoBackend: at the deadline every process working in the
// data directory is gone, the session leaders a process-group kill missed
// included.
func TestFenceLeavesNoBackend(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir)
	w, _ := runDog(t, dir)
	start := time.Now()
	send(t, w, armIn(200*time.Millisecond))
	gone := waitProcs(t, dir, 0, 3*time.Second)
	if took := gone.Sub(start); took < 200*time.Millisecond {
		t.Fatalf("fenced after %s, before the 200ms deadline", took)
	}
}

func TestFeedingKeepsItAlive(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir)
	w, _ := runDog(t, dir)
	for range 20 {
		send(t, w, armIn(300*time.Millisecond))
		time.Sleep(50 * time.Millisecond)
	}
	send(t, w, "disarm")
	time.Sleep(500 * time.Millisecond)
	if ps, _ := pgproc.Processes(dir); len(ps) != 3 {
		t.Fatalf("%d processes left, want all 3: fenced although fed", len(ps))
	}
}

// TestArmIsAbsolute: an arm line read late (the watchdog was not
// scheduled, the pipe was slow) does not move the deadline later.
func TestArmIsAbsolute(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir)
	w, _ := runDog(t, dir)
	line := armIn(100 * time.Millisecond)
	sent := time.Now()
	time.Sleep(400 * time.Millisecond) // the line sits unread
	send(t, w, line)
	gone := waitProcs(t, dir, 0, 3*time.Second)
	// With a relative "arm 100" it would have fenced 100 ms after reading,
	// at ~500 ms; the absolute deadline has passed: at once.
	if took := gone.Sub(sent); took > 480*time.Millisecond {
		t.Fatalf("fenced %s after the deadline was computed; a late line extended it", took)
	}
}

// TestStaysArmedAfterFence: once expired, the watchdog fences whatever
// starts in the directory until it is told otherwise.
func TestStaysArmedAfterFence(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir)
	w, _ := runDog(t, dir)
	send(t, w, armIn(50*time.Millisecond))
	waitProcs(t, dir, 0, 3*time.Second)
	// A server started again (a frozen agent's pg_ctl, a thawed script)
	// is fenced too.
	again := spawnServer(t, dir)
	select {
	case <-again.exited:
	case <-time.After(3 * time.Second):
		t.Fatal("a server started after the fence was not fenced")
	}
	waitProcs(t, dir, 0, 3*time.Second)
	send(t, w, "disarm")
	time.Sleep(100 * time.Millisecond)
	startServer(t, dir)
	time.Sleep(3 * refencePoll)
	if ps, _ := pgproc.Processes(dir); len(ps) != 3 {
		t.Fatalf("after disarm a new server was fenced (%d left)", len(ps))
	}
}

// TestAgentDeathFencesAtOnce: a dead agent's watchdog does not wait for
// the deadline (an orphan that did would later kill the primary of the
// agent restarted meanwhile); it fences at once and exits.
func TestAgentDeathFencesAtOnce(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir)
	w, code := runDog(t, dir)
	send(t, w, armIn(time.Minute))
	died := time.Now()
	w.Close()
	gone := waitProcs(t, dir, 0, 3*time.Second)
	t.Logf("fenced %s after the agent's end", gone.Sub(died))
	if gone.Sub(died) > time.Second {
		t.Fatalf("fenced %s after the agent died; want at once", gone.Sub(died))
	}
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit %d", c)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("watchdog did not exit after fencing for a dead agent")
	}
}

// TestHandbackAfterTheFence: a dead agent's watchdog hands the leader key
// back, and only once nothing of the server runs; not when the agent
// died disarmed (a replica) nor in pause (keep).
func TestHandbackAfterTheFence(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		commands []string
		want     string // what the probe recorded; "" not run
	}{
		{"armed", []string{armIn(time.Minute) + " lease=1a2b"}, "0 1a2b"},
		{"the last lease", []string{armIn(time.Minute) + " lease=1a2b", armIn(time.Minute) + " lease=3c"}, "0 3c"},
		{"no lease known", []string{armIn(time.Minute)}, ""},
		{"disarmed", []string{armIn(time.Minute) + " lease=1a2b", "disarm"}, ""},
		{"paused", []string{armIn(time.Minute) + " keep lease=1a2b"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			startServer(t, dir)
			marker := filepath.Join(t.TempDir(), "handback")
			w, code := runDogHandback(t, dir, []string{exe, "handback-probe", dir, marker})
			for _, c := range tc.commands {
				send(t, w, c)
			}
			w.Close()
			waitExit(t, code, 10*time.Second, "watchdog did not exit after its agent's end")
			got, err := os.ReadFile(marker)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("hand-back recorded %q (processes still running, lease), want %q (\"\": not run)", got, tc.want)
			}
		})
	}
}

func TestAgentDeathWhileDisarmedExits(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir)
	w, code := runDog(t, dir)
	send(t, w, armIn(time.Minute))
	send(t, w, "disarm")
	w.Close()
	waitExit(t, code, 2*time.Second, "watchdog did not exit")
	if ps, _ := pgproc.Processes(dir); len(ps) != 3 {
		t.Fatalf("replica fenced: %d processes left", len(ps))
	}
}

func TestMainNeedsDataDir(t *testing.T) {
	if c := Main(context.Background(), nil, nil, io.Discard, io.Discard); c != 2 {
		t.Fatalf("exit %d without --data-dir; want 2", c)
	}
}

func testClient(t *testing.T, ctx context.Context, dir string) (*Client, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Start(ctx, exe, dir, "test", "", nil, hclog.New(&hclog.LoggerOptions{Output: hclog.DefaultOutput, Level: hclog.Warn}))
}

// TestSecondWatchdogRefused: while a watchdog guards a data directory (an
// orphan of a crashed agent, say), a new agent cannot start another one.
func TestSecondWatchdogRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	a, err := testClient(t, context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if got := HolderPID(dir); got != a.PID() {
		t.Fatalf("lock holder %d, want %d", got, a.PID())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if b, err := testClient(t, ctx, dir); err == nil {
		b.Close()
		t.Fatal("a second watchdog started for the same data directory")
	} else {
		t.Logf("refused: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got := HolderPID(dir); got != 0 {
		t.Fatalf("lock still held by %d after Close", got)
	}
}

// TestOrphanGoesBeforeNewAgent: the agent dies (its end of the pipe
// closes) while armed far ahead: its watchdog fences at once and goes, so a
// restarted agent's watchdog can start and nothing fences later.
func TestOrphanGoesBeforeNewAgent(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir)
	a, err := testClient(t, context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Arm(time.Now().Add(time.Minute), false); err != nil {
		t.Fatal(err)
	}
	a.stdin.Close() // as the kernel does when the agent is killed
	waitProcs(t, dir, 0, 3*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b, err := testClient(t, ctx, dir)
	if err != nil {
		t.Fatalf("restarted agent's watchdog: %v", err)
	}
	defer b.Close()
	startServer(t, dir) // the new agent's PostgreSQL
	if err := b.Disarm(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * refencePoll)
	if ps, _ := pgproc.Processes(dir); len(ps) != 3 {
		t.Fatalf("the new agent's server was fenced (%d left)", len(ps))
	}
}

// TestFrozenWatchdogDoesNotBlock: a watchdog stopped with SIGSTOP stops
// reading; once its pipe is full, a command fails within the bound
// instead of blocking the HA loop.
func TestFrozenWatchdogDoesNotBlock(t *testing.T) {
	dir := t.TempDir()
	c, err := testClient(t, context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	pid := c.PID()
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	defer func() {
		_ = syscall.Kill(pid, syscall.SIGCONT)
		_ = c.Close()
	}()
	var failed error
	start := time.Now()
	for i := 0; i < 20000 && failed == nil; i++ {
		t0 := time.Now()
		failed = c.Arm(time.Now().Add(time.Hour), false)
		if d := time.Since(t0); d > writeBound+300*time.Millisecond {
			t.Fatalf("one command blocked %s", d)
		}
	}
	if failed == nil {
		t.Fatal("20000 commands to a frozen watchdog all succeeded")
	}
	t.Logf("failed after %s: %v", time.Since(start), failed)
}

// TestPausedAgentMayBeRestarted: armed with "keep" (a paused cluster), the
// agent's end leaves PostgreSQL running, so its agent can be restarted for
// maintenance; the deadline still fences (a frozen host, a lease lost).
func TestPausedAgentMayBeRestarted(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir)
	w, code := runDog(t, dir)
	send(t, w, armIn(time.Minute)+" keep")
	w.Close()
	waitExit(t, code, 2*time.Second, "watchdog did not exit")
	if ps, _ := pgproc.Processes(dir); len(ps) != 3 {
		t.Fatalf("a paused cluster's primary was fenced when its agent went (%d left)", len(ps))
	}
	w2, _ := runDog(t, dir)
	send(t, w2, armIn(100*time.Millisecond)+" keep")
	waitProcs(t, dir, 0, 3*time.Second)
}

// TestFrozenWatchdogIsNoticed: a watchdog stopped with SIGSTOP alone takes
// no command; its pipe has room for half an hour of them, so the agent
// learns it from the missing answers: within ackBound the node is
// unguarded, and the next command runs a new watchdog in its place.
func TestFrozenWatchdogIsNoticed(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir)
	c, err := testClient(t, context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Arm(time.Now().Add(time.Hour), false); err != nil {
		t.Fatal(err)
	}
	old := c.PID()
	_ = syscall.Kill(old, syscall.SIGSTOP)
	defer syscall.Kill(old, syscall.SIGCONT)
	frozen := time.Now()
	var failed error
	for i := 0; i < 100 && failed == nil; i++ {
		time.Sleep(100 * time.Millisecond) // the agent's loop_wait, shortened
		failed = c.Arm(time.Now().Add(time.Hour), false)
	}
	took := time.Since(frozen)
	if failed == nil {
		t.Fatal("10 s of commands to a frozen watchdog all succeeded")
	}
	t.Logf("noticed %s after the freeze: %v", took, failed)
	if took < ackBound || took > ackBound+time.Second {
		t.Fatalf("noticed %s after the freeze, want within (%s, %s]", took, ackBound, ackBound+time.Second)
	}
	var again error
	for i := 0; i < 50; i++ {
		if again = c.Arm(time.Now().Add(time.Hour), false); again == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if again != nil {
		t.Fatalf("no new watchdog after the frozen one: %v", again)
	}
	if c.PID() == old {
		t.Fatal("still the frozen watchdog")
	}
	if ps, _ := pgproc.Processes(dir); len(ps) != 3 {
		t.Fatalf("%d processes left: the replacement fenced a server it was armed far ahead for", len(ps))
	}
}

// blockedWriter never returns from Write, as a pipe nobody reads.
type blockedWriter struct{ c chan struct{} }

func (b blockedWriter) Write(p []byte) (int, error) { <-b.c; return len(p), nil }

// TestOutputNeverBlocks: a frozen agent stops reading the watchdog's
// output; the watchdog's writes must still return (a blocked one would
// end its fencing).
func TestOutputNeverBlocks(t *testing.T) {
	b := blockedWriter{make(chan struct{})}
	defer close(b.c)
	d := newDropWriter(b)
	start := time.Now()
	for range 10000 {
		fmt.Fprintln(d, "fenced 3")
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("10000 writes to a blocked reader took %s", took)
	}
}

// TestThawedHostIsStruckAtOnce: the whole host froze (a paused VM: the
// agent, the watchdog and the server) past the deadline. Thawed, the
// server's backends run what their clients had queued within a
// millisecond; the watchdog's alarm thread resumes with them and kills
// them through pidfds it already holds, before any /proc lookup.
func TestThawedHostIsStruckAtOnce(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir)
	c, err := testClient(t, context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(300 * time.Millisecond)
	if err := c.Arm(deadline, false); err != nil {
		t.Fatal(err)
	}
	// Until the watchdog holds pidfds of all three.
	waitAcked(t, c)
	procs, _ := pgproc.Processes(dir)
	frozen := append([]int{c.PID()}, procs...)
	for _, p := range frozen {
		_ = syscall.Kill(p, syscall.SIGSTOP)
	}
	for time.Now().Before(deadline.Add(300 * time.Millisecond)) {
		time.Sleep(20 * time.Millisecond) // the host stays frozen past its deadline
	}
	thaw := time.Now()
	for _, p := range frozen {
		_ = syscall.Kill(p, syscall.SIGCONT)
	}
	var children []int
	for _, p := range procs {
		if p != srv.pm.Process.Pid {
			children = append(children, p)
		}
	}
	gone := time.Time{}
	for end := thaw.Add(3 * time.Second); time.Now().Before(end); {
		alive := 0
		for _, p := range children {
			if pgproc.Alive(p) {
				alive++
			}
		}
		if alive == 0 {
			gone = time.Now()
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	if gone.IsZero() {
		t.Fatal("the backends live 3 s after the thaw")
	}
	t.Logf("backends dead %s after the thaw", gone.Sub(thaw))
	waitProcs(t, dir, 0, 3*time.Second)
}

// waitAcked waits until the watchdog answered every command sent.
func waitAcked(t *testing.T, c *Client) {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		c.ackMu.Lock()
		n := len(c.unacked)
		c.ackMu.Unlock()
		if n == 0 {
			return
		}
	}
	t.Fatal("the watchdog did not answer within 3 s")
}

// TestThawedWatchdogIsKept: after a freeze of the whole host (agent and
// watchdog), the agent's first command finds the last one unanswered for
// as long as the freeze lasted; the watchdog, running again, answers at
// once and must not be taken for frozen. (Before: the agent killed it
// as the host thawed, the moment it was striking.)
func TestThawedWatchdogIsKept(t *testing.T) {
	dir := t.TempDir()
	c, err := testClient(t, context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pid := c.PID()
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	defer syscall.Kill(pid, syscall.SIGCONT)
	if err := c.Arm(time.Now().Add(time.Hour), false); err != nil {
		t.Fatal(err)
	}
	// The host is frozen: the agent sends nothing either.
	time.Sleep(ackBound + 500*time.Millisecond)
	_ = syscall.Kill(pid, syscall.SIGCONT)
	if err := c.Arm(time.Now().Add(time.Hour), false); err != nil {
		t.Fatalf("first command after the thaw: %v", err)
	}
	if c.PID() != pid {
		t.Fatal("the thawed watchdog was replaced")
	}
	waitAcked(t, c)
}

// TestEveryAnswerCounts: an answer read before the client has counted
// its command must still clear it. (Before: the command was counted after
// the write, an early answer cleared nothing, and a healthy watchdog was
// killed as unresponsive 2 s later: seen whenever a renewal took its
// whole retry_timeout.)
func TestEveryAnswerCounts(t *testing.T) {
	dir := t.TempDir()
	c, err := testClient(t, context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 1000; i++ {
		if err := c.Arm(time.Now().Add(time.Minute), false); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			// A pause lets the watchdog answer while the next write is
			// under way, as between the keeper and the loop.
			time.Sleep(time.Millisecond)
		}
	}
	waitAcked(t, c)
}

// waitExit waits for the watchdog loop's exit, failing with msg after within.
func waitExit(t *testing.T, code <-chan int, within time.Duration, msg string) {
	t.Helper()
	select {
	case <-code:
	case <-time.After(within):
		t.Fatal(msg)
	}
}

// TestRepeatIsNotWritten: the guard told again unchanged (the loop and the
// keeper do, four times a second) is not written while the watchdog has
// answered it, for up to repeatEvery; a new deadline always is.
func TestRepeatIsNotWritten(t *testing.T) {
	dir := t.TempDir()
	c, err := testClient(t, context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	written := func() time.Time {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.lastAt
	}
	deadline := time.Now().Add(time.Minute)
	if err := c.Arm(deadline, false); err != nil {
		t.Fatal(err)
	}
	first := written()
	waitAcked(t, c)
	if err := c.Arm(deadline, false); err != nil {
		t.Fatal(err)
	}
	if !written().Equal(first) {
		t.Fatal("an answered, unchanged arm was written again at once")
	}
	if err := c.Arm(deadline, true); err != nil {
		t.Fatal(err)
	}
	if written().Equal(first) {
		t.Fatal("an arm that changed keep-on-exit was not written")
	}
	second := written()
	waitAcked(t, c)
	if err := c.Arm(deadline.Add(time.Second), true); err != nil {
		t.Fatal(err)
	}
	if written().Equal(second) {
		t.Fatal("a new deadline was not written")
	}
	if err := c.Disarm(); err != nil {
		t.Fatal(err)
	}
	third := written()
	waitAcked(t, c)
	for end := time.Now().Add(repeatEvery + time.Second); written().Equal(third) && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := c.Disarm(); err != nil {
			t.Fatal(err)
		}
	}
	if took := written().Sub(third); took < repeatEvery || took > repeatEvery+500*time.Millisecond {
		t.Fatalf("an unchanged disarm was written again after %s, want after %s", took, repeatEvery)
	}
}

// TestFrozenWatchdogIsNoticedWhileUnchanged: a replica tells its watchdog
// "disarm" again and again; a watchdog frozen meanwhile is still found
// out, at most repeatEvery later than when every command is written.
func TestFrozenWatchdogIsNoticedWhileUnchanged(t *testing.T) {
	dir := t.TempDir()
	c, err := testClient(t, context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Disarm(); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, c)
	old := c.PID()
	_ = syscall.Kill(old, syscall.SIGSTOP)
	defer syscall.Kill(old, syscall.SIGCONT)
	frozen := time.Now()
	var failed error
	for i := 0; i < 100 && failed == nil; i++ {
		time.Sleep(100 * time.Millisecond) // the agent's loop_wait, shortened
		failed = c.Disarm()
	}
	took := time.Since(frozen)
	if failed == nil {
		t.Fatal("10 s of disarms to a frozen watchdog all succeeded")
	}
	t.Logf("noticed %s after the freeze: %v", took, failed)
	if took < ackBound || took > ackBound+repeatEvery+time.Second {
		t.Fatalf("noticed %s after the freeze, want within (%s, %s]", took, ackBound, ackBound+repeatEvery+time.Second)
	}
}
