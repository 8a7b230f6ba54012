package agent

import (
	"sync"
	"sync/atomic"
)

// pmWatch follows the running postmaster: when it dies the snapshot the
// health checks read is swapped at once (a /primary answered from a
// snapshot taken before a kill -9 would say 200 for up to a loop while
// connections are refused) and the loop is woken.
type pmWatch struct {
	mu   sync.Mutex
	pid  int
	quit chan struct{}
	// dead is the last watched PID seen exiting.
	dead atomic.Int64
}

// track watches pid (0: none) from now on.
func (w *pmWatch) track(a *Agent, pid int) {
	if a.d.WatchExit == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if pid == w.pid {
		return
	}
	if w.quit != nil {
		close(w.quit)
		w.quit = nil
	}
	w.pid = pid
	if pid == 0 {
		return
	}
	exited, stop := a.d.WatchExit(pid)
	quit := make(chan struct{})
	w.quit = quit
	go func() {
		defer stop()
		select {
		case <-quit:
		case <-exited:
			w.dead.Store(int64(pid))
			if st := a.status.Load(); st.PostmasterPID == pid {
				a.status.Store(postmasterGone(st))
			}
			a.log.Warn("postmaster exited", "pid", pid)
			a.Wake()
		}
	}()
}

func (w *pmWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.quit != nil {
		close(w.quit)
		w.quit = nil
	}
	w.pid = 0
}

// postmasterGone is st after its postmaster died.
func postmasterGone(st *Status) *Status {
	c := *st
	c.Running, c.Answering, c.Streaming, c.State = false, false, false, "crashed"
	return &c
}

// Status is the last published snapshot; never nil, never modified.
func (a *Agent) Status() *Status {
	st := a.status.Load()
	if st.Running && st.PostmasterPID != 0 && a.pm.dead.Load() == int64(st.PostmasterPID) {
		// Published from an observation made before the death.
		return postmasterGone(st)
	}
	return st
}

// storeStatus publishes st, unless its postmaster is already known dead.
func (a *Agent) storeStatus(st *Status) {
	if st.Running && st.PostmasterPID != 0 && a.pm.dead.Load() == int64(st.PostmasterPID) {
		st = postmasterGone(st)
	}
	a.status.Store(st)
}
