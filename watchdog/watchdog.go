// Package watchdog is the companion process that enforces the leader's
// deadline outside the agent. After every renewal of its lease the agent
// arms it with the instant the lease could expire (minus the safety
// margin); when PostgreSQL is certainly not writable it disarms it. If the
// deadline passes unfed (the agent froze, or a call hung) the watchdog
// fences: it kills every process of the data directory (pgproc.Fence) and
// keeps killing any that appears until the agent arms or disarms it again.
// If the agent dies while the watchdog is armed, it fences at once and
// exits, so no orphaned watchdog outlives its agent by more than a fence.
// Started with --handback-config FILE, it then runs `pgwarden handback -c
// FILE --lease <hex>` once the fence left nothing running, so the leader key goes
// without waiting for the dead agent's lease (the watchdog itself knows
// nothing of etcd).
//
// The watchdog is the same binary (`pgwarden watchdog --data-dir DIR`), a
// child in its own process group so a signal meant for the agent does not
// reach it. It holds an exclusive lock on DIR.watchdog.lock (beside the
// data directory, which may be wiped and cloned) for its whole life: a new
// agent cannot start a second watchdog for the same directory while an
// old one lives.
//
// Protocol, one line each way. Agent to watchdog on standard input:
// "arm <ns> [keep] [lease=<hex>]" (fence when CLOCK_BOOTTIME reaches ns: an
// absolute instant, so a delay in reading the line cannot extend it; with
// "keep" the agent's death does not fence: a paused cluster's agent may be
// restarted for maintenance; lease is the agent's etcd lease, for the
// hand-back), "disarm", "exit" (only after disarm; while armed it
// counts as the agent's death).
// Watchdog to agent on standard output: "ready <pid>" once the lock is
// held, "ok" after each arm or disarm it took (so the agent notices a
// watchdog that stopped reading long before its pipe is full), "fenced
// <n>" after each fence that killed n > 0 processes. Its output never
// blocks it: a frozen agent that stops reading must not stop its fencing.
package watchdog

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/pgwarden/pgwarden/postgres/pgproc"
)

// lockPath is the lock file of the watchdog guarding dataDir.
func lockPath(dataDir string) string { return filepath.Clean(dataDir) + ".watchdog.lock" }

// exitLocked is the exit status of a watchdog that found another one
// holding the lock.
const exitLocked = 3

// monoNow reads the clock both processes share: CLOCK_BOOTTIME, which
// CLOCK_MONOTONIC is but for also counting the time the host was
// suspended, during which a lease runs out in etcd all the same.
func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return ts.Nano()
}

// Main is `pgwarden watchdog`: it returns the process exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("watchdog", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "PostgreSQL data directory whose processes are fenced")
	member := fs.String("member", "", "member name, for the log")
	handback := fs.String("handback-config", "", "agent configuration file: after fencing for a dead agent, run `pgwarden handback -c FILE`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" {
		fmt.Fprintln(stderr, "watchdog: --data-dir is required")
		return 2
	}
	logOut := newDropWriter(stderr)
	defer logOut.flush(time.Second)
	log := hclog.New(&hclog.LoggerOptions{Name: "watchdog", Output: logOut})
	if *member != "" {
		log = log.With("member", *member)
	}
	// Signals meant for a terminal's foreground group do not stop it; only
	// its input and its deadline do.
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGTERM)
	unlock, err := lock(*dataDir)
	if err != nil {
		fmt.Fprintln(stderr, "watchdog:", err)
		return exitLocked
	}
	defer unlock()
	out := newDropWriter(stdout)
	defer out.flush(time.Second)
	w := &dog{dataDir: *dataDir, log: log, out: out, fence: pgproc.Fence, now: monoNow, striker: pgproc.NewStriker(*dataDir)}
	if *handback != "" {
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(stderr, "watchdog: find own binary for the hand-back:", err)
			return 2
		}
		w.handback = []string{self, "handback", "-c", *handback}
	}
	defer w.striker.Close()
	fmt.Fprintf(out, "ready %d\n", os.Getpid())
	return w.run(ctx, stdin)
}

// lock takes the directory's watchdog lock, or says which process holds it.
func lock(dataDir string) (func(), error) {
	p := lockPath(dataDir)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(p)
		f.Close()
		return nil, fmt.Errorf("another watchdog (pid %s) still guards %s (lock %s)", strings.TrimSpace(string(b)), dataDir, p)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}

// HolderPID is the process holding dataDir's watchdog lock, 0 when none does.
func HolderPID(dataDir string) int {
	f, err := os.OpenFile(lockPath(dataDir), os.O_RDONLY, 0)
	if err != nil {
		return 0
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return 0
	}
	b, _ := os.ReadFile(lockPath(dataDir))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid == 0 {
		pid = -1 // held, by a process that did not write its PID yet
	}
	return pid
}

type dog struct {
	dataDir string
	log     hclog.Logger
	out     io.Writer
	fence   func(context.Context, string) (pgproc.Report, error)
	now     func() int64
	// striker, when set, holds pidfds of the server's processes while
	// armed, for a first blow that makes no lookup.
	striker *pgproc.Striker
	// handback is the command run once the server of a dead agent is
	// fenced: it hands the leader key back (nil: none), if bound to lease
	// (hex, from the last arm; "": unknown, nothing is handed back).
	handback []string
	lease    string
}

// handbackBound bounds the hand-back: past it the lease's expiry does the
// same, only later.
const handbackBound = 5 * time.Second

// strikerRefresh is how often an armed watchdog refreshes its pidfds of
// the server's processes: a backend forked since is left to the scan.
const strikerRefresh = 50 * time.Millisecond

// refencePoll is how often an expired watchdog looks for a process that
// appeared in the data directory (a postmaster restarted by a frozen
// agent's pg_ctl, say).
const refencePoll = 100 * time.Millisecond

// fenceBound bounds one fence: a process in uninterruptible sleep dies
// only when its I/O returns.
const fenceBound = 10 * time.Second

func (w *dog) run(ctx context.Context, stdin io.Reader) int {
	al, err := newAlarm(w.strike)
	if err != nil {
		w.log.Error("cannot keep a deadline", "error", err)
		return 1
	}
	defer al.close()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var (
		armed    bool
		expired  bool // the deadline passed: fence whatever appears
		keep     bool // the agent's end does not fence
		refence  *time.Timer
		refenceC <-chan time.Time
	)
	// Only while armed: a disarmed watchdog (every replica's) wakes for
	// nothing but the agent's commands.
	refresh := time.NewTicker(strikerRefresh)
	refresh.Stop()
	defer refresh.Stop()
	setArm := func(ns int64) {
		if err := al.set(ns); err != nil {
			// A deadline it cannot keep: fence now rather than never.
			w.log.Error("cannot set the deadline: fencing now", "error", err)
			armed, expired = false, true
			w.strike()
			w.doFence(ctx)
		}
	}
	startRefence := func() {
		if refence != nil {
			refence.Stop()
		}
		refence = time.NewTimer(refencePoll)
		refenceC = refence.C
	}
	stopRefence := func() {
		if refence != nil {
			refence.Stop()
		}
		refence, refenceC = nil, nil
	}
	for {
		select {
		case l, ok := <-lines:
			cmd, arg, _ := strings.Cut(strings.TrimSpace(l), " ")
			if !ok || (cmd == "exit" && (armed || expired)) {
				if (!armed && !expired) || (keep && !expired) {
					if keep && armed {
						w.log.Warn("agent gone while the cluster is paused: leaving PostgreSQL running")
					}
					return 0
				}
				// A dead agent cannot step down cleanly: nothing may keep
				// accepting writes for it. Fence now, then go.
				_ = al.set(0)
				struck := w.strike()
				w.log.Warn("agent gone while armed: fencing now", "struck", struck)
				if w.doFence(ctx) {
					w.handBack(ctx)
				}
				return 0
			}
			switch cmd {
			case "arm":
				ns, k, lease, err := parseArm(arg)
				if err != nil {
					w.log.Error("bad arm command: fencing now", "line", l, "error", err)
					ns = w.now()
				}
				keep = k
				if lease != "" {
					w.lease = lease
				}
				w.refreshStriker()
				armed, expired = true, false
				refresh.Reset(strikerRefresh)
				stopRefence()
				setArm(ns)
				fmt.Fprintln(w.out, "ok")
			case "disarm":
				armed, expired, keep = false, false, false
				refresh.Stop()
				stopRefence()
				setArm(0)
				fmt.Fprintln(w.out, "ok")
			case "exit":
				return 0
			default:
				w.log.Error("unknown command", "line", l)
			}
		case f := <-al.fired:
			// The alarm's thread has struck already; finish the fence,
			// whatever came in since (the postmaster is stopped now).
			w.log.Error("deadline passed without being fed: fencing PostgreSQL", "data_dir", w.dataDir,
				"late", f.late.Round(time.Millisecond), "struck", f.struck,
				"struck_at", f.at.UTC().Format("15:04:05.000000"), "strike_took", f.took)
			if !armed || al.deadline.Load() == 0 {
				armed, expired = false, true
			}
			w.doFence(ctx)
			if expired {
				startRefence()
			}
		case <-refenceC:
			if expired {
				w.doFence(ctx)
				startRefence()
			}
		case <-refresh.C:
			if armed {
				w.refreshStriker()
			}
		case <-ctx.Done():
			return 0
		}
	}
}

// parseArm reads the argument of an arm command: "<ns> [keep]
// [lease=<hex>]".
func parseArm(arg string) (ns int64, keep bool, lease string, err error) {
	fields := strings.Fields(arg)
	if len(fields) == 0 {
		return 0, false, "", errors.New("no deadline")
	}
	for _, f := range fields[1:] {
		switch {
		case f == "keep":
			keep = true
		case strings.HasPrefix(f, "lease="):
			lease = strings.TrimPrefix(f, "lease=")
		}
	}
	ns, err = strconv.ParseInt(fields[0], 10, 64)
	if err == nil && ns <= 0 {
		err = fmt.Errorf("deadline %d is not an instant", ns)
	}
	return ns, keep, lease, err
}

func (w *dog) refreshStriker() {
	if w.striker != nil {
		w.striker.Refresh()
	}
}

func (w *dog) strike() int {
	if w.striker == nil {
		return 0
	}
	return w.striker.Strike()
}

// doFence fences the data directory and reports whether nothing of it is
// left running.
func (w *dog) doFence(ctx context.Context) bool {
	fctx, cancel := context.WithTimeout(ctx, fenceBound)
	defer cancel()
	rep, err := w.fence(fctx, w.dataDir)
	if err != nil {
		w.log.Error("fence incomplete", "error", err)
	}
	if len(rep.Killed) > 0 {
		w.log.Warn("fenced", "postmaster", rep.Postmaster, "killed", len(rep.Killed),
			"children_killed", rep.Early, "children_took", rep.EarlyTook.Round(time.Microsecond), "took", rep.Took.Round(time.Microsecond))
		fmt.Fprintf(w.out, "fenced %d\n", len(rep.Killed))
	}
	return err == nil
}

// handBack runs the hand-back command once a dead agent's server is
// fenced: only then may the leader key go before its lease does.
func (w *dog) handBack(ctx context.Context) {
	if len(w.handback) == 0 {
		return
	}
	if w.lease == "" {
		w.log.Warn("no lease known: the leader key goes with the lease, not handed back")
		return
	}
	hctx, cancel := context.WithTimeout(ctx, handbackBound)
	defer cancel()
	start := time.Now()
	// The lease goes over the child's stdin: a command line is public to
	// every user of the host (ps, /proc/PID/cmdline).
	cmd := exec.CommandContext(hctx, w.handback[0], w.handback[1:]...)
	cmd.Stdin = strings.NewReader("lease " + w.lease + "\n")
	out, err := cmd.CombinedOutput()
	msg := strings.TrimSpace(string(out))
	if err != nil {
		w.log.Error("hand-back of the leader key failed: the others wait for the lease to expire", "error", err, "output", msg)
		return
	}
	w.log.Warn("leader key handed back", "took", time.Since(start).Round(time.Millisecond), "output", msg)
}

// dropWriter hands writes to a goroutine and drops them when its queue is
// full, so a reader that stopped (a frozen agent, a stuck log pipe) never
// blocks the watchdog's loop.
type dropWriter struct {
	ch   chan []byte
	done chan struct{}
}

func newDropWriter(w io.Writer) *dropWriter {
	d := &dropWriter{ch: make(chan []byte, 256), done: make(chan struct{})}
	go func() {
		defer close(d.done)
		for b := range d.ch {
			_, _ = w.Write(b)
		}
	}()
	return d
}

// flush waits, bounded, for what is queued to be written; nothing may be
// written after it.
func (d *dropWriter) flush(bound time.Duration) {
	close(d.ch)
	select {
	case <-d.done:
	case <-time.After(bound):
	}
}

func (d *dropWriter) Write(p []byte) (int, error) {
	select {
	case d.ch <- append([]byte(nil), p...):
	default:
	}
	return len(p), nil
}

// errUnavailable: the watchdog cannot guard this node now (it could not be
// started, or does not take commands); the agent must not let PostgreSQL
// accept writes unguarded.
var errUnavailable = errors.New("watchdog unavailable")
