package dcs

import (
	"sync"
	"testing"
	"time"
)

func TestMemorySuite(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	var mc *MemoryCluster
	runSuite(t, backend{
		client: func(t *testing.T, name string, ttl time.Duration) Store {
			if mc == nil || t.Name() != lastTest {
				mc, lastTest = NewMemoryCluster(clock), t.Name()
			}
			return mc.Client(name, ttl)
		},
		expire: func(t *testing.T, ttl time.Duration, gone func() bool) {
			mu.Lock()
			now = now.Add(ttl)
			mu.Unlock()
			if !gone() {
				t.Fatal("key still there after ttl")
			}
		},
		watchWithin: 100 * time.Millisecond,
	})
}

// lastTest scopes one MemoryCluster to one subtest.
var lastTest string

func TestMemoryUnreachable(t *testing.T) {
	mc := NewMemoryCluster(time.Now)
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
