// Package watchdog is the companion process that enforces the leader's
// deadline outside the agent: the agent arms it with "stop PostgreSQL unless
// armed again within d" after every renewal of its lease, and disarms it
// when PostgreSQL is not writable. If the agent freezes (SIGSTOP, a stuck
// call) or dies, the watchdog is not fed and kills PostgreSQL's process group
// when the deadline passes, so a primary never accepts writes after its lease
// could have expired.
//
// The watchdog is the same binary (`pgwarden watchdog --data-dir DIR`) run as
// a child in its own process group, so a signal meant for the agent does not
// reach it. Its protocol is one line per command on standard input:
// "arm <milliseconds>", "disarm", "exit". End of input keeps the current
// deadline: a dead agent's primary is fenced when its deadline passes, and
// the watchdog exits then (or at once when disarmed).
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
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Client is the agent's end of a running watchdog.
type Client struct {
	self, dataDir string
	log           hclog.Logger

	mu    sync.Mutex
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
}

// Start runs `self watchdog --data-dir dataDir` and returns once it runs.
func Start(ctx context.Context, self, dataDir string, log hclog.Logger) (*Client, error) {
	c := &Client{self: self, dataDir: dataDir, log: log}
	if err := c.spawn(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Client) spawn() error {
	cmd := exec.Command(c.self, "watchdog", "--data-dir", c.dataDir)
	// Its own process group: Ctrl-C or a group kill aimed at the agent must
	// not take the watchdog with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("watchdog stdin: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start watchdog: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	c.cmd, c.stdin, c.done = cmd, in, done
	c.log.Info("watchdog started", "pid", cmd.Process.Pid)
	return nil
}

// PID is the watchdog's process ID.
func (c *Client) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd.Process.Pid
}

func (c *Client) send(line string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		// It died (killed by someone): start a new one rather than run
		// unguarded.
		c.log.Error("watchdog exited: restarting it")
		if err := c.spawn(); err != nil {
			return err
		}
	default:
	}
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		return fmt.Errorf("feed watchdog: %w", err)
	}
	return nil
}

// Arm makes the watchdog stop PostgreSQL unless armed again within d.
func (c *Client) Arm(d time.Duration) error {
	return c.send("arm " + strconv.FormatInt(max(d.Milliseconds(), 0), 10))
}

// Disarm cancels the deadline.
func (c *Client) Disarm() error { return c.send("disarm") }

// Close disarms and stops the watchdog (clean agent shutdown).
func (c *Client) Close() error {
	err := c.send("disarm")
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = io.WriteString(c.stdin, "exit\n")
	_ = c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
		_ = c.cmd.Process.Kill()
		err = errors.Join(err, errors.New("watchdog did not exit: killed"))
	}
	return err
}

// Main is `pgwarden watchdog`: it returns the process exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stderr io.Writer) int {
	fs := flag.NewFlagSet("watchdog", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "PostgreSQL data directory whose postmaster is fenced")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" {
		fmt.Fprintln(stderr, "watchdog: --data-dir is required")
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "watchdog", Output: stderr})
	// Signals meant for a terminal's foreground group do not stop it; only
	// its input and its deadline do.
	signalIgnore()
	w := &dog{dataDir: *dataDir, log: log}
	return w.run(ctx, stdin)
}

type dog struct {
	dataDir string
	log     hclog.Logger
}

func (w *dog) run(ctx context.Context, stdin io.Reader) int {
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var deadline time.Time // zero: disarmed
	var timer <-chan time.Time
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				if deadline.IsZero() {
					return 0
				}
				w.log.Warn("agent gone while armed: fencing at the deadline", "in", time.Until(deadline).Round(time.Millisecond))
				lines = nil
				continue
			}
			cmd, arg, _ := strings.Cut(strings.TrimSpace(l), " ")
			switch cmd {
			case "arm":
				ms, err := strconv.ParseInt(arg, 10, 64)
				if err != nil || ms < 0 {
					w.log.Error("bad arm command: fencing now", "line", l)
					ms = 0
				}
				deadline = time.Now().Add(time.Duration(ms) * time.Millisecond)
				timer = time.After(time.Until(deadline))
			case "disarm":
				deadline, timer = time.Time{}, nil
			case "exit":
				return 0
			default:
				w.log.Error("unknown command", "line", l)
			}
		case <-timer:
			w.fence()
			deadline, timer = time.Time{}, nil
			if lines == nil {
				return 0
			}
		case <-ctx.Done():
			return 0
		}
	}
}

// fence kills the postmaster's process group (pg_ctl makes the postmaster a
// session leader, so its backends share its group): no backend can
// acknowledge another commit.
func (w *dog) fence() {
	pid, err := postmasterPID(w.dataDir)
	if err != nil {
		w.log.Warn("deadline passed; no postmaster to fence", "error", err)
		return
	}
	w.log.Error("deadline passed without being fed: killing PostgreSQL", "pid", pid)
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func postmasterPID(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("postmaster.pid: bad pid %q", first)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return 0, fmt.Errorf("postmaster %d: %w", pid, err)
	}
	return pid, nil
}

func signalIgnore() {
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
}
