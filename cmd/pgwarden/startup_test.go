package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/internal/testlog"
	"github.com/pgwarden/pgwarden/rest"
)

// loopFake is an agent whose only method used here is Status.
type loopFake struct {
	rest.Agent
	st atomic.Pointer[agent.Status]
}

func (f *loopFake) Status() *agent.Status { return f.st.Load() }

// TestStartupSaysWhy: before the first loop the snapshot says the agent is
// starting and why (etcd does not answer), systemd hears it as STATUS=,
// and READY=1 follows the first loop, after which the snapshot is the
// agent's own.
func TestStartupSaysWhy(t *testing.T) {
	f := &loopFake{}
	f.st.Store(&agent.Status{Name: "n1", State: "unknown"})
	sa := &startingAgent{Agent: f}
	var mu sync.Mutex
	var sent []string
	notify := func(m string) error {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, m)
		return nil
	}
	probe := func(ctx context.Context) error { return errors.New("connection refused") }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchStartup(ctx, sa, probe, []string{"127.0.0.1:1"}, 10*time.Millisecond, time.Second, notify, testlog.New(t))
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(sa.Status().Reason, "waiting for etcd (127.0.0.1:1)") {
		if time.Now().After(deadline) {
			t.Fatalf("reason %q after 5 s", sa.Status().Reason)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := sa.Status(); st.State != "starting" || !strings.Contains(st.Reason, "connection refused") {
		t.Fatalf("starting status %+v", st)
	}
	looped := &agent.Status{Name: "n1", State: "running", LastLoop: time.Now(), Reason: "holding leader key"}
	f.st.Store(looped)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("watchStartup did not end after the first loop")
	}
	if sa.Status() != looped {
		t.Fatalf("after the first loop the status is not the agent's: %+v", sa.Status())
	}
	mu.Lock()
	defer mu.Unlock()
	last := sent[len(sent)-1]
	if !strings.HasPrefix(last, "READY=1") || !strings.Contains(strings.Join(sent, "|"), "STATUS=starting: waiting for etcd") {
		t.Fatalf("notifications %q", sent)
	}
}

// TestSDNotify: the message reaches the socket $NOTIFY_SOCKET named, which
// the agent's children no longer see.
func TestSDNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	notify := sdNotifier(takeNotifySocket())
	if v, ok := os.LookupEnv("NOTIFY_SOCKET"); ok {
		t.Fatalf("NOTIFY_SOCKET still set for children: %q", v)
	}
	if err := notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	_ = ln.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, err := ln.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if err := sdNotifier("")("READY=1"); err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v", err)
	}
}
