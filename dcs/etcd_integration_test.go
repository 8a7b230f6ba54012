//go:build integration

package dcs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/integration/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

var prefixes atomic.Int64

func etcdStore(t *testing.T, endpoint, prefix, name string, ttl time.Duration) *Etcd {
	t.Helper()
	s, err := NewEtcd(t.Context(), EtcdConfig{
		Endpoints: []string{"http://" + endpoint}, Prefix: prefix, Name: name,
		TTL: ttl, RetryTimeout: 2 * time.Second,
	}, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("new etcd store: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

func TestEtcdSuite(t *testing.T) {
	e := harness.StartEtcd(t)
	prefix := ""
	last := ""
	runSuite(t, backend{
		client: func(t *testing.T, name string, ttl time.Duration) Store {
			if t.Name() != last {
				last, prefix = t.Name(), fmt.Sprintf("/pgwarden-test/%d/", prefixes.Add(1))
			}
			return etcdStore(t, e.Endpoint, prefix, name, ttl)
		},
		expire: func(t *testing.T, ttl time.Duration, gone func() bool) {
			// The guarantee callers rely on: a lease that is not renewed is
			// gone within ttl + 1 s.
			harness.WaitFor(t, ttl+time.Second, "leader key expired", func() (bool, error) { return gone(), nil })
		},
		watchWithin: 200 * time.Millisecond,
	})
}

// An etcd that stops answering becomes ErrUnavailable within retry_timeout,
// not a hang.
func TestEtcdUnavailable(t *testing.T) {
	e := harness.StartEtcd(t)
	s := etcdStore(t, e.Endpoint, "/pgwarden-test/down/", "a", 5*time.Second)
	if _, err := s.Renew(t.Context()); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if err := e.Pause(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.Resume() }()
	start := time.Now()
	_, err := s.Renew(t.Context())
	took := time.Since(start)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("renew against a frozen etcd = %v; want ErrUnavailable", err)
	}
	if took > 2*time.Second+500*time.Millisecond {
		t.Fatalf("renew took %s; want within retry_timeout 2s", took)
	}
	_, err = s.Cluster(t.Context())
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("read against a frozen etcd = %v; want ErrUnavailable", err)
	}
	if err := e.Resume(); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 10*time.Second, "etcd answers again", func() (bool, error) {
		_, err := s.Cluster(t.Context())
		return err == nil, err
	})
}

// TestReleaseLeaderOfLease: the hand-back of a dead agent's watchdog
// deletes the key only while it is bound to that agent's lease. A
// restarted agent of the same member that has bound the key to its own
// lease keeps it, however late the old request arrives. (Before: the key
// was compared by name only, and a delayed delete removed the restarted
// agent's key.)
func TestReleaseLeaderOfLease(t *testing.T) {
	e := harness.StartEtcd(t)
	prefix := fmt.Sprintf("/pgwarden-test/%d/", prefixes.Add(1))
	old := etcdStore(t, e.Endpoint, prefix, "node1", 5*time.Second)
	ctx := t.Context()
	if _, err := old.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if won, err := old.AcquireLeader(ctx); err != nil || !won {
		t.Fatalf("acquire: %v %v", won, err)
	}
	oldLease := old.LeaseID()
	// The restarted agent: same name, new lease, the key rebound to it.
	restarted := etcdStore(t, e.Endpoint, prefix, "node1", 5*time.Second)
	if _, err := restarted.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := restarted.UpdateLeader(ctx); err != nil {
		t.Fatalf("rebind: %v", err)
	}
	if err := old.ReleaseLeaderOfLease(ctx, oldLease); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("hand-back with the old lease: %v, want ErrNotLeader", err)
	}
	c, err := restarted.Cluster(ctx)
	if err != nil || c.Leader == nil || c.Leader.Name != "node1" {
		t.Fatalf("the restarted agent's key is gone: %+v %v", c.Leader, err)
	}
	if err := restarted.ReleaseLeaderOfLease(ctx, restarted.LeaseID()); err != nil {
		t.Fatalf("hand-back with the key's own lease: %v", err)
	}
	if c, err = restarted.Cluster(ctx); err != nil || c.Leader != nil {
		t.Fatalf("key still there after a hand-back with its lease: %+v %v", c.Leader, err)
	}
}
