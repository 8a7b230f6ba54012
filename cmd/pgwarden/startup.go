package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/rest"
)

// Until its first HA loop completes, an agent has nothing to publish: its
// first loop may wait for etcd for as long as etcd is away. startup says
// why meanwhile, in the log, in /patroni and /liveness (the snapshot's
// reason), and to systemd (STATUS=), and tells systemd READY=1 once the
// first loop ran.

// startingAgent is the agent as the REST API sees it: before the first
// loop, its snapshot carries the reason it is still starting.
type startingAgent struct {
	rest.Agent
	reason atomic.Pointer[string]
}

func (s *startingAgent) Status() *agent.Status {
	st := s.Agent.Status()
	r := s.reason.Load()
	if !st.LastLoop.IsZero() || r == nil {
		return st
	}
	cp := *st
	cp.State, cp.Reason = "starting", *r
	return &cp
}

// startupProbe asks etcd whether it answers (nil: it does).
type startupProbe func(ctx context.Context) error

// watchStartup reports, every interval until the first loop completed or
// ctx ended, why the agent is not running its loop yet; then it notifies
// systemd that the agent is ready.
func watchStartup(ctx context.Context, a *startingAgent, probe startupProbe, endpoints []string, interval, timeout time.Duration, notify func(string) error, log hclog.Logger) {
	start := time.Now()
	setReason := func(r string) {
		a.reason.Store(&r)
		_ = notify("STATUS=" + r)
	}
	setReason("starting: the first HA loop has not run yet")
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if !a.Agent.Status().LastLoop.IsZero() {
			if err := notify("READY=1\nSTATUS=running: the HA loop runs"); err != nil {
				log.Warn("cannot tell systemd the agent is ready", "error", err)
			}
			if time.Since(start) > interval {
				log.Info("first HA loop done", "after", time.Since(start).Round(time.Millisecond).String())
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !a.Agent.Status().LastLoop.IsZero() {
			continue
		}
		waited := time.Since(start).Round(time.Second).String()
		err := probeWithin(ctx, probe, timeout)
		if err != nil {
			setReason(fmt.Sprintf("starting: waiting for etcd (%s) for %s: %v", strings.Join(endpoints, ","), waited, err))
			log.Warn("waiting for etcd before the first HA loop", "endpoints", strings.Join(endpoints, ","), "waited", waited, "error", err)
			continue
		}
		setReason(fmt.Sprintf("starting: etcd answers; the first HA loop has not completed in %s", waited))
		log.Info("etcd answers; waiting for the first HA loop to complete", "waited", waited)
	}
}

// probeWithin bounds a probe by timeout even if it does not honour its
// context (a client stuck dialing): the report must come on time.
func probeWithin(ctx context.Context, probe startupProbe, timeout time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- probe(pctx) }()
	select {
	case err := <-errc:
		return err
	case <-time.After(timeout + 100*time.Millisecond):
		return fmt.Errorf("no answer within %s", timeout)
	}
}

// takeNotifySocket returns $NOTIFY_SOCKET (set by systemd for Type=notify
// units) and removes it from the environment: PostgreSQL, the watchdog and
// the hooks are the agent's children and must not speak to systemd for it.
func takeNotifySocket() string {
	path := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	return path
}

// sdNotifier sends messages to systemd's notification socket at path;
// with no path it sends nothing.
func sdNotifier(path string) func(string) error {
	return func(msg string) error {
		if path == "" {
			return nil
		}
		addr := path
		if strings.HasPrefix(addr, "@") {
			addr = "\x00" + addr[1:] // an abstract socket
		}
		conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
		if err != nil {
			return fmt.Errorf("notify systemd: %w", err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte(msg)); err != nil {
			return fmt.Errorf("notify systemd: %w", err)
		}
		return nil
	}
}
