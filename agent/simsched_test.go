package agent

import (
	"container/heap"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"
)

// A deterministic scheduler for the simulated cluster. Every simulated
// process (an agent's loop, its lease keeper, a watchdog) is a goroutine,
// but only one runs at a time: it runs until it waits on simulated time (or
// for another process), then hands control back. Time jumps to the next
// event. So a 12 s crash recovery takes 12 simulated seconds during which
// the other agents keep stepping, and a run replays exactly from its seed.

// group is what SIGSTOP and kill -9 act on: the processes of one OS
// process (an agent incarnation and its goroutines, or a watchdog).
type group struct {
	name     string
	frozen   bool
	dead     bool
	deferred []*proc // woken while frozen: run on thaw
	// onThaw runs (before the deferred processes) when thawed.
	onThaw []func()
}

type proc struct {
	name    string
	g       *group
	wake    chan struct{}
	done    bool
	killed  bool
	joiners []*proc
	entry   *event
	// ctx of the pending sleep, so a cancelled context can cut it short.
	ctx         context.Context
	interrupted bool
}

type event struct {
	at  time.Time
	seq uint64
	p   *proc  // a process to wake, or
	fn  func() // a callback the scheduler runs itself (etcd applying a request)
	// pfn guards fn: a callback owned by a group does not run while it
	// is frozen (it is deferred) or after it died.
	g         *group
	idx       int
	cancelled bool
}

type eventHeap []*event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int)   { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *eventHeap) Push(x any)     { e := x.(*event); e.idx = len(*h); *h = append(*h, e) }
func (h *eventHeap) Pop() any       { old := *h; e := old[len(old)-1]; *h = old[:len(old)-1]; return e }
func (h eventHeap) peek() *event    { return h[0] }
func (s *sched) pending() int       { return len(s.q) }
func (s *sched) current() *proc     { return s.cur }
func (s *sched) inProc() bool       { return s.cur != nil }
func (s *sched) nowTime() time.Time { return s.now }

type sched struct {
	now   time.Time
	seq   uint64
	q     eventHeap
	baton chan struct{}
	cur   *proc
	procs map[*proc]bool
	// after runs after every dispatch and callback: the invariant checks.
	after func(what string)
}

func newSched(start time.Time) *sched {
	return &sched{now: start, baton: make(chan struct{}), procs: map[*proc]bool{}}
}

func (s *sched) push(e *event) *event {
	if e.at.Before(s.now) {
		e.at = s.now // a deadline already past is due now: time never runs back
	}
	s.seq++
	e.seq = s.seq
	heap.Push(&s.q, e)
	return e
}

func (s *sched) cancel(e *event) {
	if e == nil || e.cancelled {
		return
	}
	e.cancelled = true
}

// at runs fn at t (in the scheduler, between processes).
func (s *sched) at(t time.Time, g *group, fn func()) *event {
	return s.push(&event{at: t, fn: fn, g: g})
}

func (s *sched) wakeAt(p *proc, t time.Time) {
	s.cancel(p.entry)
	p.entry = s.push(&event{at: t, p: p})
}

// spawn starts a process in group g; it runs f from now.
func (s *sched) spawn(name string, g *group, f func()) *proc {
	p := &proc{name: name, g: g, wake: make(chan struct{})}
	s.procs[p] = true
	go func() {
		defer func() {
			p.done = true
			for _, j := range p.joiners {
				s.wakeAt(j, s.now)
			}
			p.joiners = nil
			delete(s.procs, p)
			s.baton <- struct{}{}
		}()
		<-p.wake
		if p.killed {
			return
		}
		f()
	}()
	s.wakeAt(p, s.now)
	return p
}

// block hands control back and waits to be woken. A killed process ends
// here (its deferred calls run, each cut short at its first wait).
func (s *sched) block(p *proc) {
	if p.killed {
		runtime.Goexit()
	}
	s.baton <- struct{}{}
	<-p.wake
	if p.killed {
		runtime.Goexit()
	}
}

// sleep waits d of simulated time in the calling process, or until ctx is
// cancelled (by a stop of the sim's Go).
func (s *sched) sleep(ctx context.Context, d time.Duration) error {
	p := s.cur
	if p == nil {
		panic("sim: sleep outside a simulated process")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p.ctx, p.interrupted = ctx, false
	s.wakeAt(p, s.now.Add(max(d, 0)))
	s.block(p)
	p.ctx = nil
	if p.interrupted {
		return ctx.Err()
	}
	return nil
}

// park waits until another process wakes the caller.
func (s *sched) park() {
	p := s.cur
	s.cancel(p.entry)
	p.entry = nil
	s.block(p)
}

// interrupt wakes every process sleeping on a cancelled context.
func (s *sched) interrupt() {
	for p := range s.procs {
		if p.entry != nil && p.ctx != nil && p.ctx.Err() != nil && !p.interrupted {
			p.interrupted = true
			s.wakeAt(p, s.now)
		}
	}
}

// join waits until q has finished.
func (s *sched) join(q *proc) {
	me := s.cur
	for !q.done {
		q.joiners = append(q.joiners, me)
		s.park()
	}
}

// dispatchTimeout is real time: a process that blocks on something the
// scheduler does not know (a real channel, a real timer) would hang the
// simulation; this turns the hang into a failure with every stack.
const dispatchTimeout = 20 * time.Second

func (s *sched) dispatch(p *proc) {
	prev := s.cur
	defer func() { s.cur = prev }()
	s.cur = p
	p.wake <- struct{}{}
	select {
	case <-s.baton:
	case <-time.After(dispatchTimeout):
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
		panic(fmt.Sprintf("sim: process %s did not yield within %s of real time: it blocks outside the simulated clock", p.name, dispatchTimeout))
	}
}

// kill ends p: it is woken once and exits, running its deferred calls.
func (s *sched) kill(p *proc) {
	if p.done {
		return
	}
	p.killed = true
	s.cancel(p.entry)
	p.entry = nil
	for !p.done {
		s.dispatch(p)
	}
}

// killGroup ends every process of g (kill -9).
func (s *sched) killGroup(g *group) {
	g.dead = true
	g.deferred = nil
	for p := range s.procs {
		if p.g == g {
			s.kill(p)
		}
	}
}

func (s *sched) freeze(g *group) { g.frozen = true }

func (s *sched) thaw(g *group) {
	if !g.frozen {
		return
	}
	g.frozen = false
	fns := g.onThaw
	g.onThaw = nil
	for _, f := range fns {
		f()
	}
	for _, p := range g.deferred {
		if !p.done {
			s.wakeAt(p, s.now)
		}
	}
	g.deferred = nil
}

// runUntil runs events up to end (or until stop says so).
func (s *sched) runUntil(end time.Time, stop func() bool) {
	for s.q.Len() > 0 && !stop() {
		e := s.q.peek()
		if e.at.After(end) {
			break
		}
		heap.Pop(&s.q)
		if e.cancelled {
			continue
		}
		s.now = e.at
		if e.fn != nil {
			if e.g != nil && e.g.dead {
				continue
			}
			if e.g != nil && e.g.frozen {
				e.g.onThaw = append(e.g.onThaw, e.fn)
				continue
			}
			e.fn()
			if s.after != nil {
				s.after("event")
			}
			continue
		}
		p := e.p
		if p.entry == e {
			p.entry = nil
		}
		if p.done {
			continue
		}
		if p.g != nil && p.g.dead {
			s.kill(p)
			continue
		}
		if p.g != nil && p.g.frozen {
			p.g.deferred = append(p.g.deferred, p)
			continue
		}
		s.dispatch(p)
		if s.after != nil {
			s.after(p.name)
		}
	}
	if s.now.Before(end) && !stop() {
		s.now = end
	}
}

// shutdown ends every process (at the end of a run, so nothing leaks).
func (s *sched) shutdown() {
	for p := range s.procs {
		s.kill(p)
	}
}
