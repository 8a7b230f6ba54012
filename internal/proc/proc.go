// Package proc is a child process started in its own process group and
// ended by its PID: the handle the demo and the integration harness share,
// so both stop, freeze and wait for their processes the same way.
package proc

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is a started child process.
type Proc struct {
	name string
	Cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts cmd in a process group of its own (a Ctrl-C of the terminal
// reaches the parent, which stops its children in order). afterExit, when
// set, runs once the process has exited and before Done is closed (the
// harness drains the process's output there).
func Start(name string, cmd *exec.Cmd, afterExit func()) (*Proc, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{name: name, Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if afterExit != nil {
			afterExit()
		}
		close(p.done)
	}()
	return p, nil
}

// KillGroup sends SIGKILL to the process's whole group: what it started
// dies with it.
func (p *Proc) KillGroup() {
	_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
	_ = syscall.Kill(-p.PID(), syscall.SIGCONT)
}

// PID is the process ID.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	return syscall.Kill(p.PID(), sig)
}

// Kill sends SIGKILL (and SIGCONT, in case it was paused).
func (p *Proc) Kill() {
	_ = p.Signal(syscall.SIGKILL)
	_ = p.Signal(syscall.SIGCONT)
}

// Pause freezes the process with SIGSTOP and returns once every one of its
// threads is stopped: kill(2) returns before that, and a thread of a frozen
// etcd that still answers one request makes a test of "etcd does not
// answer" fail by chance.
func (p *Proc) Pause() error {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		stopped, err := allStopped(p.PID())
		if err != nil || stopped {
			return err
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("%s (pid %d) not stopped 5s after SIGSTOP", p.name, p.PID())
}

// allStopped: whether every thread of pid is in state T (stopped) or gone.
func allStopped(pid int) (bool, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		if os.IsNotExist(err) {
			return true, nil
		}
		return false, fmt.Errorf("read threads of %d: %w", pid, err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		// The state follows the command name in parentheses, which may
		// itself contain spaces or parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) {
			return false, fmt.Errorf("parse %s/stat: %q", t.Name(), b)
		}
		if st := b[i+2]; st != 'T' && st != 't' && st != 'Z' && st != 'X' {
			return false, nil
		}
	}
	return true, nil
}

// Resume thaws it with SIGCONT.
func (p *Proc) Resume() error { return p.Signal(syscall.SIGCONT) }

// Stop sends sig and waits up to timeout for the process to exit, killing it
// after that. It returns the exit error, if any.
func (p *Proc) Stop(sig syscall.Signal, timeout time.Duration) error {
	_ = p.Signal(sig)
	if !p.Wait(timeout) {
		p.Kill()
		p.Wait(5 * time.Second)
		return fmt.Errorf("%s did not exit within %s of %s", p.name, timeout, sig)
	}
	return p.err
}

// Wait waits up to timeout for the process to exit and says whether it did.
func (p *Proc) Wait(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Exited says whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }
