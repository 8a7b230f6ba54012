// Package pgproc knows the processes of one PostgreSQL data directory from
// the outside: its postmaster.pid, whether that postmaster lives, every
// process working in the directory, and how to end them all (the fence).
//
// It links only the standard library and x/sys, so the watchdog (which must
// fence when the agent cannot) uses exactly the code the agent uses.
package pgproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// PIDFile is what postmaster.pid says. PostgreSQL writes it line by line:
// PID, data directory, start time, port, socket directory, listen address,
// shared memory key, and (since 10) a status word.
type PIDFile struct {
	PID       int
	DataDir   string
	Start     time.Time
	Port      int
	SocketDir string
	Listen    string
	// Status is "starting", "stopping", "ready" or "standby" ("" when
	// the line is not written yet).
	Status string
}

// errNoPIDFile: there is no postmaster.pid, so no postmaster was started
// (or it shut down cleanly).
var errNoPIDFile = errors.New("no postmaster.pid")

// ReadPIDFile reads dataDir/postmaster.pid.
func ReadPIDFile(dataDir string) (PIDFile, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return PIDFile{}, errNoPIDFile
	}
	if err != nil {
		return PIDFile{}, fmt.Errorf("read postmaster.pid: %w", err)
	}
	return parsePIDFile(string(b))
}

// parsePIDFile parses the text of a postmaster.pid.
func parsePIDFile(text string) (PIDFile, error) {
	lines := strings.Split(text, "\n")
	line := func(i int) string {
		if i < len(lines) {
			return strings.TrimSpace(lines[i])
		}
		return ""
	}
	var pf PIDFile
	pid, err := strconv.Atoi(line(0))
	if err != nil || pid <= 1 {
		return PIDFile{}, fmt.Errorf("postmaster.pid: bad pid %q", line(0))
	}
	pf.PID = pid
	pf.DataDir = line(1)
	if sec, err := strconv.ParseInt(line(2), 10, 64); err == nil {
		pf.Start = time.Unix(sec, 0)
	}
	pf.Port, _ = strconv.Atoi(line(3))
	pf.SocketDir = line(4)
	pf.Listen = line(5)
	pf.Status = line(7)
	return pf, nil
}

// Alive says whether pid is a living process: it exists and is not a
// zombie (a killed postmaster stays a zombie until it is reaped, and
// kill(pid, 0) succeeds on a zombie).
func Alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) == syscall.ESRCH {
		return false
	}
	st, err := procState(pid)
	if err != nil {
		// Gone between the two looks, or /proc unreadable: kill(0) said it
		// exists, so only ESRCH from /proc counts as dead.
		return !errors.Is(err, os.ErrNotExist)
	}
	return st != 'Z' && st != 'X'
}

// procState is the state letter of /proc/PID/stat (R, S, D, T, Z, ...).
func procState(pid int) (byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return s[i+2], nil
}

// Postmaster reads postmaster.pid and says whether the postmaster it names
// is alive. A PID file whose process is gone, or whose PID now belongs to a
// process working elsewhere (PID reuse after a crash), is reported dead.
func Postmaster(dataDir string) (PIDFile, bool, error) {
	pf, err := ReadPIDFile(dataDir)
	if err != nil {
		return pf, false, err
	}
	if !Alive(pf.PID) {
		return pf, false, nil
	}
	if cwd, ok := cwdOf(pf.PID); ok && !sameDir(cwd, dataDir) {
		return pf, false, nil
	}
	return pf, true, nil
}

// cwdOf is the working directory of pid, when this process may read it.
func cwdOf(pid int) (string, bool) {
	cwd, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/cwd")
	if err != nil {
		return "", false
	}
	return cwd, true
}

func sameDir(cwd, dir string) bool {
	// A removed directory reads as "path (deleted)".
	cwd = strings.TrimSuffix(cwd, " (deleted)")
	if cwd == filepath.Clean(dir) {
		// The usual case, without resolving dir's path (a stat per
		// component, every loop).
		return true
	}
	want, err := filepath.EvalSymlinks(dir)
	return err == nil && cwd == want
}

// Processes lists the living processes (zombies excluded) whose working
// directory is dataDir, this process excluded. PostgreSQL's postmaster
// and every backend, auxiliary process and archive_command child works
// there, and a backend outlives a killed postmaster: each calls setsid(),
// so neither its process group nor its parent says it belongs to the
// server once the postmaster is gone.
func Processes(dataDir string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cwd, ok := cwdOf(pid)
		if !ok || !sameDir(cwd, dataDir) {
			continue
		}
		if Alive(pid) {
			out = append(out, pid)
		}
	}
	return out, nil
}

// Report says what a fence did.
type Report struct {
	// Postmaster is the PID the pid file named (0: none alive).
	Postmaster int
	// Killed are the processes sent SIGKILL.
	Killed []int
	// Early is how many of the postmaster's children were killed before
	// the scan of /proc, EarlyTook how long after the start that was.
	Early     int
	EarlyTook time.Duration
	// Took is how long until no process was left.
	Took time.Duration
}

// fencePoll is how often Fence looks again for processes left.
const fencePoll = 10 * time.Millisecond

// Fence leaves no process of dataDir able to commit: the postmaster is
// stopped (SIGSTOP: it can neither fork a new backend nor restart crashed
// children), every process working in the directory is killed, then the
// postmaster; it returns once none is left alive (zombies aside), or an
// error naming the survivors when ctx ends first. Fencing a directory with
// no process is not an error.
//
// SIGKILL rather than PostgreSQL's own immediate shutdown (SIGQUIT): a
// backend in a CPU-bound statement must not get to its commit, and a
// frozen postmaster would never relay the signal.
func Fence(ctx context.Context, dataDir string) (Report, error) {
	start := time.Now()
	var rep Report
	if plantedFence {
		if pf, alive, _ := Postmaster(dataDir); alive {
			rep.Postmaster = pf.PID
			_ = syscall.Kill(pf.PID, syscall.SIGKILL)
		}
		rep.Took = time.Since(start)
		return rep, nil
	}
	killed := map[int]bool{}
	if pf, alive, _ := Postmaster(dataDir); alive {
		rep.Postmaster = pf.PID
		_ = syscall.Kill(pf.PID, syscall.SIGSTOP)
		// The postmaster's own children die first, before the scan of
		// /proc (tens of milliseconds): a host thawed from a freeze runs
		// the statements its backends had queued within a few ms, and
		// each must die before its commit is acknowledged.
		// Through pidfds: the postmaster may not have stopped yet and
		// could reap a child whose PID is then reused.
		st := NewStriker(dataDir)
		st.Refresh()
		for _, pid := range st.strike() {
			killed[pid] = true
			rep.Killed = append(rep.Killed, pid)
			rep.Early++
		}
		st.Close()
		rep.EarlyTook = time.Since(start)
	}
	for {
		pids, err := Processes(dataDir)
		if err != nil {
			return rep, fmt.Errorf("fence %s: %w", dataDir, err)
		}
		if rep.Postmaster != 0 && Alive(rep.Postmaster) && !contains(pids, rep.Postmaster) {
			// Its cwd was unreadable: it is still ours to kill.
			pids = append(pids, rep.Postmaster)
		}
		if len(pids) == 0 {
			rep.Took = time.Since(start)
			return rep, nil
		}
		// Children first, the (stopped) postmaster last, so it never sees
		// a child die and starts a crash restart.
		for _, pid := range pids {
			if pid != rep.Postmaster {
				kill(pid, killed, &rep)
			}
		}
		if rep.Postmaster != 0 {
			kill(rep.Postmaster, killed, &rep)
		}
		select {
		case <-ctx.Done():
			return rep, fmt.Errorf("fence %s: processes still alive %v: %w", dataDir, pids, ctx.Err())
		case <-time.After(fencePoll):
		}
	}
}

func kill(pid int, seen map[int]bool, rep *Report) {
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if !seen[pid] {
		seen[pid] = true
		rep.Killed = append(rep.Killed, pid)
	}
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// WatchExit closes the returned channel when pid exits (becomes a zombie
// or is gone). It waits on a pidfd, so nothing polls; where pidfds are not
// available it looks every 100 ms. stop ends the watch.
func WatchExit(pid int) (exited <-chan struct{}, stop func()) {
	ch := make(chan struct{})
	done := make(chan struct{})
	var once sync.Once
	fd, err := unix.PidfdOpen(pid, 0)
	var efd int
	if err == nil {
		efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		go func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for Alive(pid) {
				select {
				case <-done:
					return
				case <-t.C:
				}
			}
			close(ch)
		}()
		return ch, func() { once.Do(func() { close(done) }) }
	}
	var mu sync.Mutex
	finished := false
	go func() {
		defer func() {
			// Closed under mu: stop must never write to a reused fd number.
			mu.Lock()
			finished = true
			unix.Close(fd)
			unix.Close(efd)
			mu.Unlock()
		}()
		for {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(efd), Events: unix.POLLIN}}
			_, err := unix.Poll(fds, -1)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || fds[1].Revents != 0 {
				return
			}
			if fds[0].Revents != 0 {
				close(ch)
				return
			}
		}
	}()
	return ch, func() {
		once.Do(func() {
			mu.Lock()
			defer mu.Unlock()
			if !finished {
				var one [8]byte
				one[0] = 1
				_, _ = unix.Write(efd, one[:])
			}
		})
	}
}

// Striker keeps pidfds of one data directory's postmaster and of its
// children, so the first blow of a fence needs no /proc lookup: a host
// thawed from a freeze (a paused VM) runs its backends' queued statements
// within milliseconds, and every /proc read the fence makes first is time
// a commit can use. Refresh it while a deadline is armed; Strike when the
// deadline passes, then Fence for whatever it missed. Its methods may be
// called from any goroutine.
type Striker struct {
	dataDir string

	mu   sync.Mutex
	pm   int // postmaster PID, 0: none
	pmfd int
	kids map[int]int // child PID -> pidfd
}

// NewStriker returns a Striker for dataDir holding nothing yet.
func NewStriker(dataDir string) *Striker {
	return &Striker{dataDir: dataDir, pmfd: -1, kids: map[int]int{}}
}

// Refresh opens pidfds for the postmaster postmaster.pid names and for its
// children working in the data directory, and closes those of processes
// gone. Each pidfd is kept only if its process still lived after its
// working directory was checked, so it names the process that was checked
// (a PID reused in between would have needed the first process to die).
func (s *Striker) Refresh() {
	s.mu.Lock()
	defer s.mu.Unlock()
	pf, alive, _ := Postmaster(s.dataDir)
	if !alive || pf.PID != s.pm || exited(s.pmfd) {
		s.closeLocked()
		if !alive {
			return
		}
		fd, ok := s.open(pf.PID)
		if !ok {
			return
		}
		s.pm, s.pmfd = pf.PID, fd
	}
	p := strconv.Itoa(s.pm)
	b, err := os.ReadFile("/proc/" + p + "/task/" + p + "/children")
	if err != nil {
		return
	}
	listed := map[int]bool{}
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 {
			continue
		}
		listed[pid] = true
		if _, ok := s.kids[pid]; ok {
			continue
		}
		if fd, ok := s.open(pid); ok {
			s.kids[pid] = fd
		}
	}
	for pid, fd := range s.kids {
		if !listed[pid] || exited(fd) {
			unix.Close(fd)
			delete(s.kids, pid)
		}
	}
}

// open returns a pidfd of pid if pid works in the data directory and still
// lives once that was checked.
func (s *Striker) open(pid int) (int, bool) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, false
	}
	if cwd, ok := cwdOf(pid); !ok || !sameDir(cwd, s.dataDir) || exited(fd) {
		unix.Close(fd)
		return -1, false
	}
	return fd, true
}

// exited says whether the process of pidfd fd has exited (a pidfd polls
// readable then).
func exited(fd int) bool {
	if fd < 0 {
		return true
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err != nil || n > 0
}

// Strike stops the postmaster and kills every child it knew of, through
// their pidfds, and returns how many it signalled. It makes no lookup.
func (s *Striker) Strike() int { return len(s.strike()) }

// strike is Strike returning the PIDs of the children it signalled.
func (s *Striker) strike() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pm == 0 {
		return nil
	}
	if plantedFence {
		_ = unix.PidfdSendSignal(s.pmfd, unix.SIGKILL, nil, 0)
		return nil
	}
	_ = unix.PidfdSendSignal(s.pmfd, unix.SIGSTOP, nil, 0)
	var struck []int
	for pid, fd := range s.kids {
		if unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil {
			struck = append(struck, pid)
		}
	}
	return struck
}

// Close releases the pidfds.
func (s *Striker) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
}

func (s *Striker) closeLocked() {
	if s.pm != 0 {
		unix.Close(s.pmfd)
	}
	for pid, fd := range s.kids {
		unix.Close(fd)
		delete(s.kids, pid)
	}
	s.pm, s.pmfd = 0, -1
}
