package dcs_test

import (
	"sync"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/dcs/dcstest"
)

func TestMemorySuite(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	var mc *dcs.MemoryCluster
	dcstest.Run(t, dcstest.Backend{
		Client: func(t *testing.T, name string, ttl time.Duration) dcs.Store {
			if mc == nil || t.Name() != lastTest {
				mc, lastTest = dcs.NewMemoryCluster(clock), t.Name()
			}
			return mc.Client(name, ttl)
		},
		Expire: func(t *testing.T, ttl time.Duration, gone func() bool) {
			mu.Lock()
			now = now.Add(ttl)
			mu.Unlock()
			if !gone() {
				t.Fatal("key still there after ttl")
			}
		},
		WatchWithin: 100 * time.Millisecond,
	})
}

// lastTest scopes one MemoryCluster to one subtest.
var lastTest string

func TestMemoryUnreachable(t *testing.T) {
	mc := dcs.NewMemoryCluster(time.Now)
	a := mc.Client("a", time.Second)
	mc.SetReachable("a", false)
	if _, err := a.Cluster(t.Context()); err == nil {
		t.Fatal("unreachable member read the cluster")
	}
	mc.SetReachable("a", true)
	if _, err := a.Cluster(t.Context()); err != nil {
		t.Fatalf("reachable again: %v", err)
	}
}
