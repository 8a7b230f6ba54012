package watchdog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Client is the agent's end of a running watchdog.
type Client struct {
	self, dataDir, member string
	// handback is the agent's configuration file, for the hand-back of
	// the leader key after a dead agent's fence ("" none).
	handback string
	// leaseID is the agent's current etcd lease, sent with each arm so a
	// hand-back deletes only a key still bound to it (nil: none).
	leaseID func() int64
	log     hclog.Logger
	// env is the agent's environment when Start ran, for every spawn: the
	// hand-back reads the configuration as the agent did, secrets the
	// agent then removed from its own environment included.
	env []string

	mu    sync.Mutex
	cmd   *exec.Cmd
	stdin *os.File
	done  chan struct{}
	// last is the last command sent, repeated to a respawned watchdog;
	// lastCmd is what it said and lastAt when it was written (repeat).
	last    string
	lastCmd command
	lastAt  time.Time

	// unacked are the send times of the commands the running watchdog
	// has not answered "ok" to yet, oldest first.
	ackMu   sync.Mutex
	unacked []time.Time
}

// ackBound is how long a command may go unanswered before the watchdog
// counts as unresponsive (frozen, starved): its pipe would take half an
// hour of commands to fill, and a node guarded by a watchdog that reads
// nothing is not guarded.
const ackBound = 2 * time.Second

// writeBound bounds one command: a frozen watchdog stops reading, and a
// full pipe must not block the HA loop.
const writeBound = 200 * time.Millisecond

// startBound is how long Start waits for an earlier watchdog of the same
// data directory to go (an orphan fences and exits at once) and for the
// new one to report ready.
const startBound = 15 * time.Second

// Start runs `self watchdog --data-dir dataDir` and returns once it holds
// the directory's lock and is ready. While a watchdog of an earlier agent
// still guards the directory it waits (bounded), then refuses.
//
// When handback names the agent's configuration file, a watchdog that
// fenced because its agent died then runs `self handback -c handback`,
// telling it on its stdin the last lease leaseID gave (it deletes the leader key
// if this member holds it bound to that lease), so a replica takes over
// without waiting for the lease to expire.
func Start(ctx context.Context, self, dataDir, member, handback string, leaseID func() int64, log hclog.Logger) (*Client, error) {
	c := &Client{self: self, dataDir: dataDir, member: member, handback: handback, leaseID: leaseID, log: log, env: os.Environ()}
	ctx, cancel := context.WithTimeout(ctx, startBound)
	defer cancel()
	for {
		err := c.spawn(ctx)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, errLocked) || ctx.Err() != nil {
			return nil, err
		}
		log.Warn("an earlier watchdog of this data directory is still alive: waiting for it to go", "pid", HolderPID(dataDir))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("start watchdog: %w (pid %d), and it did not go in time", err, HolderPID(dataDir))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

var errLocked = errors.New("another watchdog guards this data directory")

func (c *Client) spawn(ctx context.Context) error {
	args := []string{"watchdog", "--data-dir", c.dataDir}
	if c.member != "" {
		args = append(args, "--member", c.member)
	}
	if c.handback != "" {
		args = append(args, "--handback-config", c.handback)
	}
	cmd := exec.Command(c.self, args...)
	cmd.Env = c.env
	// Its own process group: Ctrl-C or a group kill aimed at the agent must
	// not take the watchdog with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = os.Stderr
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("watchdog stdin: %w", err)
	}
	cmd.Stdin = r
	out, err := cmd.StdoutPipe()
	if err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("watchdog stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("start watchdog: %w", err)
	}
	r.Close()
	done := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		readyOnce := false
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.HasPrefix(l, "ready ") && !readyOnce:
				readyOnce = true
				close(ready)
			case l == "ok":
				c.ackMu.Lock()
				if len(c.unacked) > 0 {
					c.unacked = c.unacked[1:]
				}
				c.ackMu.Unlock()
			case strings.HasPrefix(l, "fenced "):
				if n, _ := strconv.Atoi(strings.TrimPrefix(l, "fenced ")); n > 0 {
					c.log.Warn("watchdog fenced PostgreSQL", "killed", n)
				}
			}
		}
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-ready:
	case <-done:
		w.Close()
		if cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == exitLocked {
			return errLocked
		}
		return fmt.Errorf("start watchdog: exited at start (%v)", cmd.ProcessState)
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		w.Close()
		<-done
		return fmt.Errorf("start watchdog: not ready: %w", ctx.Err())
	}
	c.ackMu.Lock()
	c.unacked = nil
	c.ackMu.Unlock()
	c.cmd, c.stdin, c.done = cmd, w, done
	c.log.Info("watchdog started", "pid", cmd.Process.Pid)
	return nil
}

// PID is the watchdog's process ID.
func (c *Client) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd.Process.Pid
}

// command is what a line tells the watchdog, for comparing two commands
// (an arm line's monotonic nanoseconds differ for the same deadline).
type command struct {
	disarm   bool
	deadline time.Time
	keep     bool
	lease    int64
}

func (c command) same(o command) bool {
	return c.disarm == o.disarm && c.deadline.Equal(o.deadline) && c.keep == o.keep && c.lease == o.lease
}

// repeatEvery is how long a command equal to the last one, which the
// watchdog answered, is not written again. The loop and the keeper tell
// the watchdog the guard four times a second at loop_wait 1, mostly
// unchanged: each is a round trip that wakes both processes, most of
// what an idle node costs. A new deadline is always written; a watchdog
// that stops answering is still found out (the command it has not
// answered is never skipped), at most this much later.
const repeatEvery = time.Second

func (c *Client) send(line string, cmd command) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		// It died (killed by someone): start a new one rather than run
		// unguarded; the lock is free once the old process is gone.
		c.log.Error("watchdog exited: restarting it")
		c.stdin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.spawn(ctx)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: %v", errUnavailable, err)
		}
		if c.last != "" && c.last != line {
			if err := c.write(c.last); err != nil {
				return err
			}
		}
	default:
		if c.last != "" && cmd.same(c.lastCmd) && time.Since(c.lastAt) < repeatEvery && c.oldestUnanswered() == 0 {
			return nil
		}
	}
	if err := c.write(line); err != nil {
		return err
	}
	c.last, c.lastCmd, c.lastAt = line, cmd, time.Now()
	return nil
}

func (c *Client) write(line string) error {
	if c.oldestUnanswered() > ackBound && !c.answersSoon() {
		// Killed so that the next command starts a fresh one (send
		// restarts a watchdog that exited); until then the node is
		// unguarded and the agent acts on that.
		late := c.oldestUnanswered()
		c.log.Error("watchdog does not answer: killing it", "pid", c.cmd.Process.Pid, "unanswered_for", late.Round(time.Millisecond))
		_ = c.cmd.Process.Kill()
		return fmt.Errorf("%w: it has not answered a command sent %s ago", errUnavailable, late.Round(time.Millisecond))
	}
	// Counted before it is written: the answer can be read before the
	// write returns, and an answer that finds nothing to clear would leave
	// this command unanswered for ever (and a healthy watchdog killed 2 s
	// later).
	if line != "exit" {
		c.ackMu.Lock()
		c.unacked = append(c.unacked, time.Now())
		c.ackMu.Unlock()
	}
	_ = c.stdin.SetWriteDeadline(time.Now().Add(writeBound))
	_, err := c.stdin.WriteString(line + "\n")
	// Cleared once written: a deadline left set fires later for nothing,
	// one more wake-up of the agent for each command.
	_ = c.stdin.SetWriteDeadline(time.Time{})
	if err != nil {
		if line != "exit" {
			// Not (wholly) written, so not answered. A partial line is
			// completed by the next one into a bad command, which the
			// watchdog fences on: the node is unguarded until then anyway.
			c.ackMu.Lock()
			if n := len(c.unacked); n > 0 {
				c.unacked = c.unacked[:n-1]
			}
			c.ackMu.Unlock()
		}
		return fmt.Errorf("%w: feed watchdog: %v", errUnavailable, err)
	}
	return nil
}

// oldestUnanswered is how long the oldest command not answered yet has
// waited (0: none).
func (c *Client) oldestUnanswered() time.Duration {
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	if len(c.unacked) == 0 {
		return 0
	}
	return time.Since(c.unacked[0])
}

// answerGrace is how long a watchdog that looks unresponsive is given to
// show an answer before it is killed.
const answerGrace = 100 * time.Millisecond

// answersSoon waits (at most answerGrace) for the oldest unanswered
// command to be answered. After a whole host is frozen and thawed the
// agent finds a command "unanswered" for as long as the freeze lasted,
// though the watchdog answered it as it ran again: the answer is in the
// pipe, for a reader that has not run yet. Killing it then would take
// the fence away at the moment it strikes.
func (c *Client) answersSoon() bool {
	c.ackMu.Lock()
	var first time.Time
	if len(c.unacked) > 0 {
		first = c.unacked[0]
	}
	c.ackMu.Unlock()
	for end := time.Now().Add(answerGrace); time.Now().Before(end); time.Sleep(time.Millisecond) {
		c.ackMu.Lock()
		answered := len(c.unacked) == 0 || !c.unacked[0].Equal(first)
		c.ackMu.Unlock()
		if answered {
			return true
		}
	}
	return false
}

// Arm makes the watchdog fence PostgreSQL unless armed again (or disarmed)
// before deadline, and at once when the agent dies unless keepOnExit. The
// deadline travels as an instant of CLOCK_BOOTTIME, so the time the line
// spends in the pipe does not extend it.
func (c *Client) Arm(deadline time.Time, keepOnExit bool) error {
	ns := monoNow() + int64(time.Until(deadline))
	line := "arm " + strconv.FormatInt(max(ns, 1), 10)
	if keepOnExit {
		line += " keep"
	}
	cmd := command{deadline: deadline, keep: keepOnExit}
	if c.leaseID != nil {
		if id := c.leaseID(); id != 0 {
			line += " lease=" + strconv.FormatInt(id, 16)
			cmd.lease = id
		}
	}
	return c.send(line, cmd)
}

// Disarm cancels the deadline (and stops an expired watchdog's fencing).
func (c *Client) Disarm() error { return c.send("disarm", command{disarm: true}) }

// Close disarms and stops the watchdog (clean agent shutdown).
func (c *Client) Close() error {
	err := c.send("disarm", command{disarm: true})
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		_ = c.write("exit")
	}
	_ = c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
		_ = c.cmd.Process.Kill()
		err = errors.Join(err, errors.New("watchdog did not exit: killed"))
	}
	return err
}

// Failed stands in for a watchdog that could not be started: every command
// fails, so the agent knows the node is unguarded and will not make it a
// primary.
type Failed struct{ Err error }

// Arm implements the agent's Watchdog.
func (f Failed) Arm(time.Time, bool) error { return fmt.Errorf("%w: %v", errUnavailable, f.Err) }

// Disarm implements the agent's Watchdog.
func (f Failed) Disarm() error { return fmt.Errorf("%w: %v", errUnavailable, f.Err) }
