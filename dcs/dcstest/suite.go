// Package dcstest is the behavioural suite every dcs.Store implementation
// passes: the in-memory one in dcs, the etcd one in dcs/etcd.
package dcstest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

// Backend is one Store implementation under the suite.
type Backend struct {
	// Client makes a member's store; closed by the suite's cleanup.
	Client func(t *testing.T, name string, ttl time.Duration) dcs.Store
	// Expire lets ttl pass (memory: moves the fake clock; etcd: waits).
	Expire func(t *testing.T, ttl time.Duration, gone func() bool)
	// WatchWithin is how soon a watcher must see a change.
	WatchWithin time.Duration
}

// Run runs the suite against b.
func Run(t *testing.T, b Backend) {
	ctx := context.Background()
	const ttl = 2 * time.Second
	// seen reads s until want holds, within watchWithin: a client whose
	// view the watch keeps sees another client's write after the
	// watch's delay, its own at once.
	seen := func(t *testing.T, s dcs.Store, want func(*dcs.Cluster) bool) *dcs.Cluster {
		t.Helper()
		deadline := time.Now().Add(b.WatchWithin)
		for i := 0; ; i++ {
			cl, err := s.Cluster(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want(cl) || time.Now().After(deadline) || i > 1000 {
				return cl
			}
			time.Sleep(5 * time.Millisecond) // polled to the deadline above
		}
	}
	renew := func(t *testing.T, s dcs.Store) {
		t.Helper()
		if _, err := s.Renew(ctx); err != nil {
			t.Fatalf("renew: %v", err)
		}
	}

	t.Run("leader key: first wins, only the holder updates and releases", func(t *testing.T) {
		a, c := b.Client(t, "a", ttl), b.Client(t, "b", ttl)
		renew(t, a)
		renew(t, c)
		if won, err := a.AcquireLeader(ctx); err != nil || !won {
			t.Fatalf("a acquire = %v, %v; want true", won, err)
		}
		if won, err := c.AcquireLeader(ctx); err != nil || won {
			t.Fatalf("b acquire = %v, %v; want false", won, err)
		}
		if err := a.UpdateLeader(ctx); err != nil {
			t.Fatalf("a update: %v", err)
		}
		if err := c.UpdateLeader(ctx); !errors.Is(err, dcs.ErrNotLeader) {
			t.Fatalf("b update = %v; want ErrNotLeader", err)
		}
		if err := c.ReleaseLeader(ctx); !errors.Is(err, dcs.ErrNotLeader) {
			t.Fatalf("b release = %v; want ErrNotLeader", err)
		}
		cl, err := c.Cluster(ctx)
		if err != nil || cl.Leader == nil || cl.Leader.Name != "a" {
			t.Fatalf("cluster leader = %+v, %v; want a", cl.Leader, err)
		}
		if err := c.SetStatus(ctx, dcs.Status{LSN: 7}); !errors.Is(err, dcs.ErrNotLeader) {
			t.Fatalf("b set status = %v; want ErrNotLeader", err)
		}
		if err := a.SetStatus(ctx, dcs.Status{LSN: 42}); err != nil {
			t.Fatalf("a set status: %v", err)
		}
		if err := a.ReleaseLeader(ctx); err != nil {
			t.Fatalf("a release: %v", err)
		}
		if won, err := c.AcquireLeader(ctx); err != nil || !won {
			t.Fatalf("b acquire after release = %v, %v; want true", won, err)
		}
		cl, _ = a.Cluster(ctx)
		if cl.Status.LSN != 42 {
			t.Fatalf("status lsn = %d; want 42", cl.Status.LSN)
		}
	})

	t.Run("acquire without a lease fails", func(t *testing.T) {
		a := b.Client(t, "a", ttl)
		if _, err := a.AcquireLeader(ctx); !errors.Is(err, dcs.ErrLeaseExpired) {
			t.Fatalf("acquire without lease = %v; want ErrLeaseExpired", err)
		}
	})

	t.Run("members are bound to the lease; close revokes it", func(t *testing.T) {
		a, c := b.Client(t, "a", ttl), b.Client(t, "b", ttl)
		renew(t, a)
		if err := a.TouchMember(ctx, dcs.Member{Name: "a", Role: "primary", WALPosition: 99, Priority: 10}); err != nil {
			t.Fatalf("touch: %v", err)
		}
		if won, _ := a.AcquireLeader(ctx); !won {
			t.Fatal("a did not win")
		}
		cl, err := c.Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := cl.Member("a")
		if m == nil || m.WALPosition != 99 || m.Role != "primary" || m.Revision == 0 {
			t.Fatalf("member a = %+v", m)
		}
		if err := a.Close(ctx); err != nil {
			t.Fatalf("close: %v", err)
		}
		cl = seen(t, c, func(cl *dcs.Cluster) bool { return cl.Member("a") == nil && cl.Leader == nil })
		if cl.Member("a") != nil || cl.Leader != nil {
			t.Fatalf("after close: member %+v leader %+v; want both gone", cl.Member("a"), cl.Leader)
		}
	})

	t.Run("lease expiry deletes the leader key; renew then reports it", func(t *testing.T) {
		a, c, d := b.Client(t, "a", ttl), b.Client(t, "b", ttl), b.Client(t, "d", ttl)
		renew(t, d)
		if err := d.TouchMember(ctx, dcs.Member{Name: "d"}); err != nil {
			t.Fatal(err)
		}
		renew(t, a)
		if won, _ := a.AcquireLeader(ctx); !won {
			t.Fatal("a did not win")
		}
		start := time.Now()
		b.Expire(t, ttl, func() bool {
			cl, err := c.Cluster(ctx)
			return err == nil && cl.Leader == nil && cl.Member("d") == nil
		})
		t.Logf("leader key gone %s after the last renewal (ttl %s)", time.Since(start).Round(10*time.Millisecond), ttl)
		// A move of an expired lease must not bring its keys back.
		if _, err := d.MoveLease(ctx, 2*ttl); !errors.Is(err, dcs.ErrLeaseExpired) {
			t.Fatalf("move of an expired lease = %v; want ErrLeaseExpired", err)
		}
		if cl, err := c.Cluster(ctx); err != nil || cl.Member("d") != nil {
			t.Fatalf("after the move of an expired lease: member d %+v, %v; want gone", cl.Member("d"), err)
		}
		if _, err := a.Renew(ctx); !errors.Is(err, dcs.ErrLeaseExpired) {
			t.Fatalf("renew after expiry = %v; want ErrLeaseExpired", err)
		}
		if _, err := a.Renew(ctx); err != nil {
			t.Fatalf("renew makes a new lease: %v", err)
		}
		if won, err := a.AcquireLeader(ctx); err != nil || !won {
			t.Fatalf("acquire with the new lease = %v, %v", won, err)
		}
	})

	t.Run("a bootstrap claim goes with its holder's lease; a recorded system id stays", func(t *testing.T) {
		a, c := b.Client(t, "a", ttl), b.Client(t, "b", ttl)
		if _, err := a.Initialize(ctx, ""); !errors.Is(err, dcs.ErrLeaseExpired) {
			t.Fatalf("claim without a lease = %v; want ErrLeaseExpired", err)
		}
		renew(t, a)
		if rev, err := a.Initialize(ctx, ""); err != nil || rev == 0 {
			t.Fatalf("claim = %v, %v", rev, err)
		}
		// The winner dies while creating the cluster: the race reopens.
		b.Expire(t, ttl, func() bool {
			cl, err := c.Cluster(ctx)
			return err == nil && cl.InitializeRevision == 0
		})
		renew(t, c)
		rev, err := c.Initialize(ctx, "")
		if err != nil || rev == 0 {
			t.Fatalf("second claim after the first holder's lease expired = %v, %v", rev, err)
		}
		if cl, _ := c.Cluster(ctx); cl.InitializeRevision != rev {
			t.Fatalf("claim revision %d, key at %d", rev, cl.InitializeRevision)
		}
		if err := c.SetInitialize(ctx, "4242", rev); err != nil {
			t.Fatal(err)
		}
		// Its writer's lease revoked: the recorded cluster stays.
		if err := c.Close(ctx); err != nil {
			t.Fatal(err)
		}
		cl, err := a.Cluster(ctx)
		if err != nil || cl.Initialize != "4242" {
			t.Fatalf("recorded system id after its writer's lease: %q, %v", cl.Initialize, err)
		}
	})

	t.Run("restarted holder rebinds the key to its new lease", func(t *testing.T) {
		old, c := b.Client(t, "a", ttl), b.Client(t, "b", ttl)
		renew(t, old)
		if won, _ := old.AcquireLeader(ctx); !won {
			t.Fatal("a did not win")
		}
		cl := seen(t, c, func(cl *dcs.Cluster) bool { return cl.Leader != nil })
		oldLease := cl.Leader.LeaseID
		restarted := b.Client(t, "a", ttl)
		renew(t, restarted)
		if err := restarted.UpdateLeader(ctx); err != nil {
			t.Fatalf("update from restarted agent: %v", err)
		}
		cl = seen(t, c, func(cl *dcs.Cluster) bool { return cl.Leader != nil && cl.Leader.LeaseID != oldLease })
		if cl.Leader == nil || cl.Leader.Name != "a" || cl.Leader.LeaseID == oldLease {
			t.Fatalf("leader after rebind = %+v (old lease %d)", cl.Leader, oldLease)
		}
	})

	t.Run("a ttl change moves the member and leader keys onto a new lease", func(t *testing.T) {
		a, c := b.Client(t, "a", ttl), b.Client(t, "b", ttl)
		renew(t, a)
		renew(t, c)
		if err := a.TouchMember(ctx, dcs.Member{Name: "a", Role: "primary", WALPosition: 7}); err != nil {
			t.Fatal(err)
		}
		if won, _ := a.AcquireLeader(ctx); !won {
			t.Fatal("a did not win")
		}
		cl := seen(t, c, func(cl *dcs.Cluster) bool { return cl.Leader != nil && cl.Member("a") != nil })
		oldLease := cl.Leader.LeaseID
		got, err := a.MoveLease(ctx, 2*ttl)
		if err != nil || got != 2*ttl {
			t.Fatalf("move to %s = %s, %v; want the granted %s", 2*ttl, got, err, 2*ttl)
		}
		// The old lease is revoked: a key left on it would be gone now.
		cl = seen(t, c, func(cl *dcs.Cluster) bool { return cl.Leader != nil && cl.Leader.LeaseID != oldLease })
		if cl.Leader == nil || cl.Leader.Name != "a" || cl.Leader.LeaseID == oldLease || cl.Member("a") == nil || cl.Member("a").WALPosition != 7 {
			t.Fatalf("after the move: leader %+v member %+v (old lease %x)", cl.Leader, cl.Member("a"), oldLease)
		}
		if _, err := a.Renew(ctx); err != nil {
			t.Fatalf("renew of the new lease: %v", err)
		}
		if err := a.UpdateLeader(ctx); err != nil {
			t.Fatalf("update leader after the move: %v", err)
		}
		// A key lost meanwhile is neither stolen back nor resurrected.
		if err := a.ReleaseLeader(ctx); err != nil {
			t.Fatal(err)
		}
		if won, err := c.AcquireLeader(ctx); err != nil || !won {
			t.Fatalf("b acquire = %v, %v", won, err)
		}
		if _, err := a.MoveLease(ctx, ttl); err != nil {
			t.Fatalf("move back to %s: %v", ttl, err)
		}
		cl = seen(t, c, func(cl *dcs.Cluster) bool { return cl.Member("a") != nil })
		if cl.Leader == nil || cl.Leader.Name != "b" || cl.Member("a") == nil {
			t.Fatalf("after a's second move: leader %+v member a %+v; want b, a kept", cl.Leader, cl.Member("a"))
		}
		// A running backup's lock stays where it is: the move waits.
		rev, err := a.AcquireBackupLock(ctx, dcs.BackupLock{Member: "a", ID: "a-1"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.MoveLease(ctx, 2*ttl); !errors.Is(err, dcs.ErrLeaseInUse) {
			t.Fatalf("move with a backup lock on the lease = %v; want ErrLeaseInUse", err)
		}
		cl = seen(t, c, func(cl *dcs.Cluster) bool { return cl.BackupLock != nil })
		if cl.BackupLock == nil || cl.BackupLock.Revision != rev || cl.Member("a") == nil {
			t.Fatalf("after the refused move: lock %+v (rev %d) member a %+v", cl.BackupLock, rev, cl.Member("a"))
		}
		if _, err := a.UpdateBackupLock(ctx, dcs.BackupLock{Member: "a", ID: "a-1", Percent: 9}, rev); err != nil {
			t.Fatalf("backup progress after the refused move: %v", err)
		}
	})

	t.Run("initialize race and compare-and-swap keys", func(t *testing.T) {
		a, c := b.Client(t, "a", ttl), b.Client(t, "b", ttl)
		if rev, err := a.Initialize(ctx, "123"); err != nil || rev == 0 {
			t.Fatalf("a initialize = %v, %v", rev, err)
		}
		if rev, err := c.Initialize(ctx, "456"); err != nil || rev != 0 {
			t.Fatalf("b initialize = %v, %v; want lost", rev, err)
		}
		cl, _ := c.Cluster(ctx)
		if cl.Initialize != "123" {
			t.Fatalf("initialize = %q", cl.Initialize)
		}
		if err := c.SetInitialize(ctx, "999", cl.InitializeRevision+1000); !errors.Is(err, dcs.ErrKeyModified) {
			t.Fatalf("set initialize at wrong revision = %v", err)
		}
		if err := a.SetInitialize(ctx, "789", cl.InitializeRevision); err != nil {
			t.Fatalf("set initialize: %v", err)
		}

		if err := a.SetConfig(ctx, []byte(`{"ttl":10}`), 0); err != nil {
			t.Fatalf("create config: %v", err)
		}
		if err := c.SetConfig(ctx, []byte(`{"ttl":20}`), 0); !errors.Is(err, dcs.ErrKeyModified) {
			t.Fatalf("second create = %v; want ErrKeyModified", err)
		}
		cl, _ = c.Cluster(ctx)
		if err := c.SetConfig(ctx, []byte(`{"ttl":30}`), cl.ConfigRevision); err != nil {
			t.Fatalf("cas config: %v", err)
		}
		if err := a.SetConfig(ctx, []byte(`{"ttl":40}`), cl.ConfigRevision); !errors.Is(err, dcs.ErrKeyModified) {
			t.Fatalf("stale cas = %v; want ErrKeyModified", err)
		}
		cl, _ = c.Cluster(ctx)
		if string(cl.Config) != `{"ttl":30}` {
			t.Fatalf("config = %s", cl.Config)
		}

		f := dcs.Failover{Kind: "switchover", Leader: "a", Candidate: "b"}
		if err := a.SetFailover(ctx, f, 0); err != nil {
			t.Fatalf("set failover: %v", err)
		}
		if err := c.SetFailover(ctx, f, 0); !errors.Is(err, dcs.ErrKeyModified) {
			t.Fatalf("second failover = %v; want ErrKeyModified", err)
		}
		cl, _ = c.Cluster(ctx)
		if cl.Failover == nil || cl.Failover.Candidate != "b" {
			t.Fatalf("failover = %+v", cl.Failover)
		}
		if err := c.DeleteFailover(ctx, cl.Failover.Revision+1000); !errors.Is(err, dcs.ErrKeyModified) {
			t.Fatalf("delete at wrong revision = %v", err)
		}
		if err := c.DeleteFailover(ctx, cl.Failover.Revision); err != nil {
			t.Fatalf("delete failover: %v", err)
		}
		for i := range 3 {
			if err := a.AppendHistory(ctx, dcs.HistoryEntry{Timeline: uint32(i + 1), Reason: fmt.Sprint(i)}); err != nil {
				t.Fatalf("history: %v", err)
			}
		}
		cl = seen(t, c, func(cl *dcs.Cluster) bool { return len(cl.History) == 3 })
		if cl.Failover != nil || len(cl.History) != 3 || cl.History[2].Timeline != 3 {
			t.Fatalf("failover %+v history %+v", cl.Failover, cl.History)
		}
	})

	t.Run("watch wakes on a leader change", func(t *testing.T) {
		a, c := b.Client(t, "a", ttl), b.Client(t, "b", ttl)
		renew(t, a)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w := c.Watch(wctx)
		// Drain a possible initial signal, then change the leader.
		select {
		case <-w:
		default:
		}
		start := time.Now()
		if won, _ := a.AcquireLeader(ctx); !won {
			t.Fatal("a did not win")
		}
		select {
		case <-w:
			t.Logf("watch woke %s after the leader key was written", time.Since(start).Round(time.Millisecond))
		case <-time.After(b.WatchWithin):
			t.Fatalf("watch did not wake within %s", b.WatchWithin)
		}
	})

	t.Run("watch stays quiet on the leader's status writes", func(t *testing.T) {
		a := b.Client(t, "a", ttl)
		renew(t, a)
		if won, err := a.AcquireLeader(ctx); !won || err != nil {
			_ = a.ReleaseLeader(ctx)
			if won, err = a.AcquireLeader(ctx); !won {
				t.Fatalf("a did not win: %v", err)
			}
		}
		defer a.ReleaseLeader(ctx)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w := a.Watch(wctx)
		// Let the acquisition's own event arrive, then drain it.
		select {
		case <-w:
		case <-time.After(b.WatchWithin):
		}
		for i := range 20 {
			if err := a.SetStatus(ctx, dcs.Status{LSN: wal.LSN(i + 1), Time: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-w:
			t.Fatal("a status write woke the watch: the leader's loop would chase its own writes")
		case <-time.After(300 * time.Millisecond):
		}
		if err := a.TouchMember(ctx, dcs.Member{Name: "a", Role: "primary"}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-w:
		case <-time.After(b.WatchWithin):
			t.Fatalf("a member write did not wake the watch within %s", b.WatchWithin)
		}
	})

	t.Run("backup lock: one holder at a time, progress and release only at its revision", func(t *testing.T) {
		a, c := b.Client(t, "a", ttl), b.Client(t, "b", ttl)
		renew(t, a)
		renew(t, c)
		l := dcs.BackupLock{Member: "a", ID: "a-1", Type: "full", Started: time.Unix(1000, 0).UTC()}
		rev, err := a.AcquireBackupLock(ctx, l)
		if err != nil || rev == 0 {
			t.Fatalf("a takes the lock = %d, %v", rev, err)
		}
		if _, err := c.AcquireBackupLock(ctx, dcs.BackupLock{Member: "b", Type: "diff"}); !errors.Is(err, dcs.ErrKeyModified) {
			t.Fatalf("b takes a held lock = %v; want ErrKeyModified", err)
		}
		l.Percent, l.Bytes = 42.5, 1<<20
		rev2, err := a.UpdateBackupLock(ctx, l, rev)
		if err != nil || rev2 <= rev {
			t.Fatalf("a updates its lock = %d, %v", rev2, err)
		}
		if _, err := c.UpdateBackupLock(ctx, dcs.BackupLock{Member: "b"}, rev); !errors.Is(err, dcs.ErrKeyModified) {
			t.Fatalf("update at a stale revision = %v; want ErrKeyModified", err)
		}
		cl, err := c.Cluster(ctx)
		if err != nil || cl.BackupLock == nil || cl.BackupLock.Member != "a" || cl.BackupLock.Percent != 42.5 ||
			cl.BackupLock.Revision != rev2 || !cl.BackupLock.Started.Equal(l.Started) {
			t.Fatalf("lock as others see it = %+v, %v", cl.BackupLock, err)
		}
		if err := a.ReleaseBackupLock(ctx, rev); !errors.Is(err, dcs.ErrKeyModified) {
			t.Fatalf("release at a stale revision = %v; want ErrKeyModified", err)
		}
		if err := a.ReleaseBackupLock(ctx, rev2); err != nil {
			t.Fatalf("release: %v", err)
		}
		if _, err := c.AcquireBackupLock(ctx, dcs.BackupLock{Member: "b"}); err != nil {
			t.Fatalf("b takes the released lock: %v", err)
		}
	})

	t.Run("backup lock goes with its runner's lease", func(t *testing.T) {
		a, c := b.Client(t, "a", ttl), b.Client(t, "b", ttl)
		if _, err := a.AcquireBackupLock(ctx, dcs.BackupLock{Member: "a"}); !errors.Is(err, dcs.ErrLeaseExpired) {
			t.Fatalf("lock without a lease = %v; want ErrLeaseExpired", err)
		}
		renew(t, a)
		rev, err := a.AcquireBackupLock(ctx, dcs.BackupLock{Member: "a"})
		if err != nil {
			t.Fatal(err)
		}
		b.Expire(t, ttl, func() bool {
			cl, err := c.Cluster(ctx)
			return err == nil && cl.BackupLock == nil
		})
		if _, err := a.UpdateBackupLock(ctx, dcs.BackupLock{Member: "a", Percent: 50}, rev); !errors.Is(err, dcs.ErrKeyModified) {
			t.Fatalf("update after the lease expired = %v; want ErrKeyModified (the runner must stop)", err)
		}
	})

	t.Run("backup runs: the last of each kind, durable", func(t *testing.T) {
		a, c := b.Client(t, "a", ttl), b.Client(t, "b", ttl)
		for _, r := range []dcs.BackupRun{{Kind: "full", ID: "1", OK: true, Label: "L1"}, {Kind: "diff", ID: "2", Error: "boom"}, {Kind: "full", ID: "3", OK: true, Label: "L3"}} {
			if err := a.RecordBackupRun(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		cl, err := c.Cluster(ctx)
		if err != nil || len(cl.BackupRuns) != 2 || cl.BackupRuns["full"].Label != "L3" || cl.BackupRuns["diff"].Error != "boom" {
			t.Fatalf("runs = %+v, %v", cl.BackupRuns, err)
		}
	})

	// Three writers at once: each loses the compare-and-swap at most twice (a
	// loss means another's write landed), within the retries a rewrite has.
	t.Run("concurrent history appends and backup runs all land", func(t *testing.T) {
		names := []string{"a", "b", "c"}
		kinds := []string{"full", "diff", "incr"}
		stores := make([]dcs.Store, len(names))
		for i, n := range names {
			stores[i] = b.Client(t, n, ttl)
		}
		errs := make(chan error, 2*len(stores))
		var wg sync.WaitGroup
		for i, s := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.AppendHistory(ctx, dcs.HistoryEntry{Timeline: uint32(i + 1), Reason: names[i]})
				errs <- s.RecordBackupRun(ctx, dcs.BackupRun{Kind: kinds[i], ID: names[i], OK: true})
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent write: %v", err)
			}
		}
		cl := seen(t, stores[0], func(cl *dcs.Cluster) bool { return len(cl.History) == 3 && len(cl.BackupRuns) == 3 })
		timelines := map[uint32]bool{}
		for _, h := range cl.History {
			timelines[h.Timeline] = true
		}
		if len(cl.History) != 3 || !timelines[1] || !timelines[2] || !timelines[3] {
			t.Fatalf("history = %+v", cl.History)
		}
		for i, k := range kinds {
			if cl.BackupRuns[k].ID != names[i] {
				t.Fatalf("runs = %+v", cl.BackupRuns)
			}
		}
	})

	t.Run("backup slots: claimed by one leader only, kept across runs", func(t *testing.T) {
		a, c := b.Client(t, "a", ttl), b.Client(t, "b", ttl)
		slot := time.Date(2026, 11, 30, 1, 0, 0, 0, time.UTC)
		claim := dcs.BackupSlot{Slot: slot, Member: "a"}
		if err := a.UpdateBackupSlot(ctx, "incr", nil, claim); err != nil {
			t.Fatal(err)
		}
		if err := c.UpdateBackupSlot(ctx, "incr", nil, dcs.BackupSlot{Slot: slot, Member: "b"}); !errors.Is(err, dcs.ErrKeyModified) {
			t.Fatalf("a second claim of the same slot = %v; want ErrKeyModified", err)
		}
		if err := c.RecordBackupRun(ctx, dcs.BackupRun{Kind: "incr", ID: "manual", OK: true}); err != nil {
			t.Fatal(err)
		}
		done := claim
		done.Done, done.OK = true, true
		if err := a.UpdateBackupSlot(ctx, "incr", &claim, done); err != nil {
			t.Fatalf("finish the claimed slot after a manual run: %v", err)
		}
		cl, err := c.Cluster(ctx)
		if err != nil || cl.BackupRuns["incr"].ID != "manual" || !cl.BackupRuns["incr"].Schedule.Same(&done) {
			t.Fatalf("incr = %+v, %v; want the manual run and the done slot", cl.BackupRuns["incr"], err)
		}
	})

	t.Run("watch stays quiet on backup progress", func(t *testing.T) {
		a := b.Client(t, "a", ttl)
		renew(t, a)
		rev, err := a.AcquireBackupLock(ctx, dcs.BackupLock{Member: "a"})
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		w := a.Watch(wctx)
		select {
		case <-w:
		case <-time.After(b.WatchWithin):
		}
		for i := range 10 {
			if rev, err = a.UpdateBackupLock(ctx, dcs.BackupLock{Member: "a", Percent: float64(i)}, rev); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.RecordBackupRun(ctx, dcs.BackupRun{Kind: "full"}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-w:
			t.Fatal("a backup progress write woke the watch")
		case <-time.After(300 * time.Millisecond):
		}
	})

	t.Run("one winner among concurrent acquirers, every round", func(t *testing.T) {
		const n, rounds = 10, 50
		stores := make([]dcs.Store, n)
		for i := range stores {
			stores[i] = b.Client(t, fmt.Sprintf("m%d", i), ttl)
			renew(t, stores[i])
		}
		for r := range rounds {
			var wg sync.WaitGroup
			var mu sync.Mutex
			var winners []int
			var errs []error
			for i, s := range stores {
				wg.Add(1)
				go func() {
					defer wg.Done()
					won, err := s.AcquireLeader(ctx)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, err)
					}
					if won {
						winners = append(winners, i)
					}
				}()
			}
			wg.Wait()
			if len(errs) > 0 || len(winners) != 1 {
				t.Fatalf("round %d: winners %v errors %v; want exactly one winner", r, winners, errs)
			}
			if err := stores[winners[0]].ReleaseLeader(ctx); err != nil {
				t.Fatalf("round %d: release: %v", r, err)
			}
		}
	})
}
