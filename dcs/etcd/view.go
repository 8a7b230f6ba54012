package etcd

import (
	"context"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgwarden/pgwarden/dcs"
)

// The agent's loop reads the cluster every loop_wait, and health checks
// and /cluster read it on every request: a linearizable range read each
// time is most of what an idle agent costs etcd. Once Watch runs, Cluster
// answers from a view the watch keeps: seeded by one full read taken after
// the watch started (so every later change reaches it), advanced by each
// event, dropped when the watch ends (an error, a compaction, a lost etcd
// leader), after which the next Cluster reads in full and seeds it again.
//
// Read-your-writes: each write this client made is remembered by its
// revision, and Cluster waits (briefly) for the view to reach it, or reads
// in full. The view can lag others' writes by the watch's delay; every
// write that decides leadership is still a transaction comparing
// revisions, so a late view can delay a decision, never make a wrong
// write succeed. It cannot hide that etcd is unreachable either: the lease
// renewal (its own request every loop_wait) is the agent's probe of etcd.

// view is the cluster as the watch keeps it.
type view struct {
	mu sync.Mutex
	// valid: seeded, and the watch has run since without a gap.
	valid bool
	// from: the watch delivers every change after this revision.
	from     int64
	watching bool
	// base is the seed's revision: events at or before it are in the seed
	// (several events share one revision: a transaction, a lease's end).
	base int64
	rev  int64
	kvs  map[string]*mvccpb.KeyValue
	// pending are events received before the view was seeded.
	pending []*clientv3.Event
	// moved is closed and replaced whenever rev advances.
	moved chan struct{}
	// freshAt is when the watch last delivered anything (an event, or
	// the answer to a progress request the renewal sends).
	freshAt time.Time
	// decoded is kvs decoded, until kvs change: an idle cluster is read
	// every loop and by every health check, and decoding its members'
	// JSON each time is most of what a read costs. Readers share it and
	// never modify it.
	decoded *dcs.Cluster
}

// maxPending bounds the events kept while no seed has been taken: past it
// the view waits for the next watch.
const maxPending = 10000

// viewCatchUp bounds how long Cluster waits for the view to reach this
// client's own last write before it reads in full.
const viewCatchUp = 300 * time.Millisecond

func newView() *view { return &view{moved: make(chan struct{})} }

// The methods below are no-ops on a nil view (a second Watch of one
// client signals without keeping a view).

// started records that a watch now delivers every change after rev.
func (v *view) started(rev int64) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.watching, v.from, v.freshAt = true, rev, time.Now()
}

// fresh records that the watch delivered something at t.
func (v *view) fresh(t time.Time) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.freshAt = t
}

// stopped drops the view: the watch ended, changes may be missed.
func (v *view) stopped() {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.watching, v.valid, v.pending, v.kvs, v.decoded = false, false, nil, nil, nil
}

// apply takes a watch response's events.
func (v *view) apply(evs []*clientv3.Event) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.valid {
		if len(v.pending)+len(evs) > maxPending {
			v.pending, v.watching = nil, false
			return
		}
		v.pending = append(v.pending, evs...)
		return
	}
	v.applyLocked(evs)
}

func (v *view) applyLocked(evs []*clientv3.Event) {
	advanced := false
	for _, ev := range evs {
		if ev.Kv.ModRevision <= v.base {
			continue // the seed has it
		}
		k := string(ev.Kv.Key)
		v.decoded = nil
		if ev.Type == clientv3.EventTypeDelete {
			delete(v.kvs, k)
		} else {
			v.kvs[k] = ev.Kv
		}
		v.rev, advanced = max(v.rev, ev.Kv.ModRevision), true
	}
	if advanced {
		close(v.moved)
		v.moved = make(chan struct{})
	}
}

// seed takes a full read at rev, and makes the view valid when the watch
// covers everything after it.
func (v *view) seed(rev int64, kvs []*mvccpb.KeyValue) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.watching || v.valid || rev < v.from {
		return
	}
	v.kvs = make(map[string]*mvccpb.KeyValue, len(kvs))
	for _, kv := range kvs {
		v.kvs[string(kv.Key)] = kv
	}
	v.base, v.rev, v.valid, v.decoded = rev, rev, true, nil
	pending := v.pending
	v.pending = nil
	v.applyLocked(pending)
	close(v.moved)
	v.moved = make(chan struct{})
}

// cluster decodes the view once it has reached revision min; ok is false
// when it is not valid, not fresh within bound (a stream can stall with no
// error: a read must then go to etcd, or a replica keeps following a
// leader that is gone), or did not get there within viewCatchUp.
func (v *view) cluster(ctx context.Context, min int64, prefix string, bound time.Duration) (*dcs.Cluster, bool) {
	deadline := time.NewTimer(viewCatchUp)
	defer deadline.Stop()
	for {
		v.mu.Lock()
		if !v.valid || time.Since(v.freshAt) > bound {
			v.mu.Unlock()
			return nil, false
		}
		if v.rev >= min {
			if v.decoded == nil {
				c := &dcs.Cluster{Revision: v.rev}
				for k, kv := range v.kvs {
					dcs.DecodeKey(c, strings.TrimPrefix(k, prefix), kv.Value, kv.ModRevision, kv.Lease)
				}
				sortCluster(c)
				v.decoded = c
			}
			c := v.decoded
			v.mu.Unlock()
			return c, true
		}
		moved := v.moved
		v.mu.Unlock()
		select {
		case <-moved:
		case <-deadline.C:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
	}
}

// leaderHeld says whether the view, once valid, at revision min and
// fresh within bound (its stream delivered lately: a stalled stream
// shows no error for a while), shows the leader key holding name bound
// to lease. Someone else's delete (an operator's, a hand-back) reaches a
// fresh view within the watch's delay.
func (v *view) leaderHeld(key, name string, lease int64, min int64, bound time.Duration) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.valid || v.rev < min || time.Since(v.freshAt) > bound {
		return false
	}
	kv := v.kvs[key]
	return kv != nil && string(kv.Value) == name && kv.Lease == lease
}

// revKV is the client's KV that remembers the revision of each write this
// client made (a put, a delete that deleted, a transaction whose taken
// branch wrote), for the view's read-your-writes.
type revKV struct {
	clientv3.KV
	note func(rev int64)
}

func (k revKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	r, err := k.KV.Put(ctx, key, val, opts...)
	if err == nil {
		k.note(r.Header.Revision)
	}
	return r, err
}

func (k revKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	r, err := k.KV.Delete(ctx, key, opts...)
	if err == nil && r.Deleted > 0 {
		k.note(r.Header.Revision)
	}
	return r, err
}

func (k revKV) Txn(ctx context.Context) clientv3.Txn {
	return &revTxn{Txn: k.KV.Txn(ctx), note: k.note}
}

type revTxn struct {
	clientv3.Txn
	note                   func(int64)
	thenWrites, elseWrites bool
}

func writes(ops []clientv3.Op) bool {
	for _, op := range ops {
		if op.IsPut() || op.IsDelete() {
			return true
		}
	}
	return false
}

func (t *revTxn) If(cs ...clientv3.Cmp) clientv3.Txn { t.Txn = t.Txn.If(cs...); return t }
func (t *revTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.thenWrites = t.thenWrites || writes(ops)
	t.Txn = t.Txn.Then(ops...)
	return t
}
func (t *revTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.elseWrites = t.elseWrites || writes(ops)
	t.Txn = t.Txn.Else(ops...)
	return t
}
func (t *revTxn) Commit() (*clientv3.TxnResponse, error) {
	r, err := t.Txn.Commit()
	if err == nil && ((r.Succeeded && t.thenWrites) || (!r.Succeeded && t.elseWrites)) {
		t.note(r.Header.Revision)
	}
	return r, err
}

func sortCluster(c *dcs.Cluster) {
	sort.Slice(c.Members, func(i, j int) bool { return c.Members[i].Name < c.Members[j].Name })
}
