package watchdog

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// alarm fires at an instant of CLOCK_BOOTTIME on an OS thread of its own,
// blocked in read(2) on a timerfd, and runs its first blow right there. A
// Go timer would do: but a process thawed from SIGSTOP (a paused VM) wakes
// its Go timers only when the runtime's monitor next looks, measured at
// 3.5 ms, and the thawed backends of the same host committed their queued
// statements within 1 ms. A blocked read(2) resumes as the thread is
// continued, and finds the expired timer at once.
type alarm struct {
	fd       int
	deadline atomic.Int64 // 0: disarmed
	closing  atomic.Bool
	strike   func() int
	fired    chan fire
	done     chan struct{}
}

// fire is what the alarm did when its deadline passed.
type fire struct {
	at     time.Time
	late   time.Duration
	struck int
	took   time.Duration
}

func newAlarm(strike func() int) (*alarm, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_BOOTTIME, unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create timerfd: %w", err)
	}
	a := &alarm{fd: fd, strike: strike, fired: make(chan fire, 1), done: make(chan struct{})}
	go a.loop()
	return a, nil
}

func (a *alarm) loop() {
	defer close(a.done)
	runtime.LockOSThread()
	var buf [8]byte
	for {
		_, err := unix.Read(a.fd, buf[:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || a.closing.Load() {
			return
		}
		d := a.deadline.Load()
		now := monoNow()
		// Set again or disarmed since the timer was set: not this one.
		if d == 0 || now < d || !a.deadline.CompareAndSwap(d, 0) {
			continue
		}
		at := time.Now()
		n := a.strike()
		f := fire{at: at, late: time.Duration(now - d), struck: n, took: time.Since(at)}
		select {
		case a.fired <- f:
		default:
		}
	}
}

// set makes the alarm fire at ns (CLOCK_BOOTTIME); 0 disarms it. A
// deadline already past fires at once.
func (a *alarm) set(ns int64) error {
	a.deadline.Store(ns)
	var spec unix.ItimerSpec
	if ns > 0 {
		spec.Value = unix.NsecToTimespec(ns)
	}
	if err := unix.TimerfdSettime(a.fd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		return fmt.Errorf("set timerfd: %w", err)
	}
	return nil
}

// close stops the alarm's thread (a close(2) would not wake its read).
func (a *alarm) close() {
	a.closing.Store(true)
	a.deadline.Store(0)
	spec := unix.ItimerSpec{Value: unix.Timespec{Nsec: 1}}
	_ = unix.TimerfdSettime(a.fd, unix.TFD_TIMER_ABSTIME, &spec, nil)
	<-a.done
	unix.Close(a.fd)
}
