// Package watchdog is the companion process that enforces the leader's
// deadline outside the agent. After every renewal of its lease the agent
// arms it with the instant the lease could expire (minus the safety
// margin); when PostgreSQL is certainly not writable it disarms it. If the
// deadline passes unfed (the agent froze, or a call hung) the watchdog
// fences: it kills every process of the data directory (pgproc.Fence) and
// keeps killing any that appears until the agent arms or disarms it again.
// If the agent dies while the watchdog is armed, it fences at once and
// exits, so no orphaned watchdog outlives its agent by more than a fence.
//
// The watchdog is the same binary (`pgwarden watchdog --data-dir DIR`), a
// child in its own process group so a signal meant for the agent does not
// reach it. It holds an exclusive lock on DIR.watchdog.lock (beside the
// data directory, which may be wiped and cloned) for its whole life: a new
// agent cannot start a second watchdog for the same directory while an
// old one lives.
//
// Protocol, one line each way. Agent to watchdog on standard input:
// "arm <ns> [keep]" (fence when CLOCK_MONOTONIC reaches ns: an absolute
// instant, so a delay in reading the line cannot extend it; with "keep" the
// agent's death does not fence: a paused cluster's agent may be restarted
// for maintenance), "disarm", "exit" (only after disarm; while armed it
// counts as the agent's death).
// Watchdog to agent on standard output: "ready <pid>" once the lock is
// held, "fenced <n>" after each fence that killed n processes.
package watchdog

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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

// LockPath is the lock file of the watchdog guarding dataDir.
func LockPath(dataDir string) string { return filepath.Clean(dataDir) + ".watchdog.lock" }

// exitLocked is the exit status of a watchdog that found another one
// holding the lock.
const exitLocked = 3

// monoNow reads CLOCK_MONOTONIC, the clock both processes share.
func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// Main is `pgwarden watchdog`: it returns the process exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("watchdog", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "PostgreSQL data directory whose processes are fenced")
	member := fs.String("member", "", "member name, for the log")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" {
		fmt.Fprintln(stderr, "watchdog: --data-dir is required")
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "watchdog", Output: stderr})
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
	w := &dog{dataDir: *dataDir, log: log, out: stdout, fence: pgproc.Fence, now: monoNow}
	fmt.Fprintf(stdout, "ready %d\n", os.Getpid())
	return w.run(ctx, stdin)
}

// lock takes the directory's watchdog lock, or says which process holds it.
func lock(dataDir string) (func(), error) {
	p := LockPath(dataDir)
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
	f, err := os.OpenFile(LockPath(dataDir), os.O_RDONLY, 0)
	if err != nil {
		return 0
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return 0
	}
	b, _ := os.ReadFile(LockPath(dataDir))
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
}

// refencePoll is how often an expired watchdog looks for a process that
// appeared in the data directory (a postmaster restarted by a frozen
// agent's pg_ctl, say).
const refencePoll = 100 * time.Millisecond

// fenceBound bounds one fence: a process in uninterruptible sleep dies
// only when its I/O returns.
const fenceBound = 10 * time.Second

func (w *dog) run(ctx context.Context, stdin io.Reader) int {
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
		deadline int64
		timer    *time.Timer
		timerC   <-chan time.Time
	)
	setTimer := func(d time.Duration) {
		if timer != nil {
			timer.Stop()
		}
		timer = time.NewTimer(max(d, 0))
		timerC = timer.C
	}
	stopTimer := func() {
		if timer != nil {
			timer.Stop()
		}
		timer, timerC = nil, nil
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
				w.log.Warn("agent gone while armed: fencing now")
				w.doFence(ctx)
				return 0
			}
			switch cmd {
			case "arm":
				arg, k, _ := strings.Cut(arg, " ")
				keep = k == "keep"
				ns, err := strconv.ParseInt(arg, 10, 64)
				if err != nil || ns <= 0 {
					w.log.Error("bad arm command: fencing now", "line", l)
					ns = w.now()
				}
				armed, expired, deadline = true, false, ns
				setTimer(time.Duration(deadline - w.now()))
			case "disarm":
				armed, expired, keep = false, false, false
				stopTimer()
			case "exit":
				return 0
			default:
				w.log.Error("unknown command", "line", l)
			}
		case <-timerC:
			if armed && w.now() < deadline {
				// Timers may fire early by a hair: wait for the instant.
				setTimer(time.Duration(deadline - w.now()))
				continue
			}
			if !expired {
				w.log.Error("deadline passed without being fed: fencing PostgreSQL", "data_dir", w.dataDir,
					"late", time.Duration(w.now()-deadline).Round(time.Millisecond))
			}
			armed, expired = false, true
			w.doFence(ctx)
			setTimer(refencePoll)
		case <-ctx.Done():
			return 0
		}
	}
}

func (w *dog) doFence(ctx context.Context) {
	fctx, cancel := context.WithTimeout(ctx, fenceBound)
	defer cancel()
	rep, err := w.fence(fctx, w.dataDir)
	if err != nil {
		w.log.Error("fence incomplete", "error", err)
	}
	if len(rep.Killed) > 0 {
		w.log.Warn("fenced", "postmaster", rep.Postmaster, "killed", len(rep.Killed), "took", rep.Took.Round(time.Microsecond))
	}
	fmt.Fprintf(w.out, "fenced %d\n", len(rep.Killed))
}

// ErrUnavailable: the watchdog cannot guard this node now (it could not be
// started, or does not take commands); the agent must not let PostgreSQL
// accept writes unguarded.
var ErrUnavailable = errors.New("watchdog unavailable")
