package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgwarden/pgwarden/dcs"
)

// Config says how one member reaches etcd.
type Config struct {
	// Endpoints are host:port, or http(s)://host:port.
	Endpoints []string
	Username  string
	Password  string
	TLS       *TLSFiles
	// Prefix is the cluster's key prefix, ending in "/".
	Prefix string
	// Name is this member's name: the leader key's value when it leads.
	Name string
	// TTL is the lease's time to live.
	TTL time.Duration
	// RetryTimeout bounds every etcd call.
	RetryTimeout time.Duration
}

// TLSFiles are PEM files for a TLS connection to etcd.
type TLSFiles struct {
	CA, Cert, Key string
}

// Store is the dcs.Store on a real etcd v3 cluster.
type Store struct {
	cfg Config
	cli *clientv3.Client
	log hclog.Logger
	// keep sends the renewals, on one stream (keepalive.go).
	keep *keeper

	mu    sync.Mutex
	ttl   time.Duration
	lease clientv3.LeaseID
	// unsure is a lease granted by a move whose transaction got no answer:
	// the keys may be bound to it. The next Renew finds out. unsureTTL is
	// the ttl it was granted for (the store's once the keys are found on it).
	unsure    clientv3.LeaseID
	unsureTTL time.Duration
	// binding is held (shared) by every write that binds a key to the
	// lease, and exclusively by a move: a key written with the old lease
	// after the move read it would go with the old lease's revocation.
	binding sync.RWMutex

	// kv is cli's KV remembering this client's writes (wrote, the last
	// one's revision) for the watch-kept view.
	kv    clientv3.KV
	view  *view
	wrote atomic.Int64
	// viewOwned: a Watch keeps the view (only the first may).
	viewOwned atomic.Bool
	// progress is the context of the view's watch, for progress requests.
	progress atomic.Pointer[context.Context]
}

var _ dcs.Store = (*Store)(nil)

// New makes a client; without credentials it does not wait for etcd to
// answer, so an agent can start (and fence, and serve its REST API) while
// etcd is down. With credentials the etcd client authenticates here, and
// needs etcd now: a refusal (a TLS handshake either way, the password) is
// an *AccessError, an etcd that does not answer the generic error.
func New(ctx context.Context, cfg Config, log hclog.Logger) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	if cfg.RetryTimeout <= 0 {
		cfg.RetryTimeout = 3 * time.Second
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 10 * time.Second
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	eps, secure, err := normalizeEndpoints(cfg.Endpoints)
	if err != nil {
		return nil, err
	}
	cc := clientv3.Config{
		Endpoints:            eps,
		DialTimeout:          cfg.RetryTimeout,
		DialKeepAliveTime:    cfg.RetryTimeout,
		DialKeepAliveTimeout: cfg.RetryTimeout,
		Username:             cfg.Username,
		Password:             cfg.Password,
		Logger:               zap.NewNop(),
		Context:              context.WithoutCancel(ctx),
		// Fixed flow-control windows turn off gRPC's bandwidth probe,
		// which answers every message received (each renewal, each
		// watch event) with a ping round trip: an idle agent's wake-ups.
		// A cluster's keys fit the windows many times over.
		DialOptions: []grpc.DialOption{
			grpc.WithInitialWindowSize(1 << 20),
			grpc.WithInitialConnWindowSize(1 << 20),
		},
	}
	if cc.TLS, err = clientTLS(cfg.TLS, secure); err != nil {
		return nil, err
	}
	e := &Store{cfg: cfg, log: log, ttl: cfg.TTL, view: newView()}
	if cfg.Username != "" {
		// With credentials the client authenticates in New: a handshake
		// etcd refuses would show as a timeout, so it is tried first.
		if _, err := e.probe(ctx, eps, cc.TLS); err != nil {
			return nil, err
		}
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		if aerr := e.accessError(strings.Join(eps, ","), false, err); aerr != nil {
			return nil, aerr
		}
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	e.cli = cli
	e.keep = newKeeper(cli)
	e.kv = revKV{KV: cli.KV, note: e.noteWrite}
	return e, nil
}

// normalizeEndpoints accepts host:port and http(s)://host:port and returns
// what the client wants, and whether any asked for TLS.
func normalizeEndpoints(in []string) ([]string, bool, error) {
	var out []string
	secure := false
	for _, e := range in {
		hp := e
		switch {
		case strings.HasPrefix(e, "https://"):
			secure = true
			hp = strings.TrimPrefix(e, "https://")
		case strings.HasPrefix(e, "http://"):
			hp = strings.TrimPrefix(e, "http://")
		}
		if _, _, err := net.SplitHostPort(hp); err != nil {
			return nil, false, fmt.Errorf("etcd endpoint %q: %w", e, err)
		}
		out = append(out, hp)
	}
	return out, secure, nil
}

func (e *Store) key(k string) string { return e.cfg.Prefix + k }

// RemoveCluster deletes every key under this cluster's prefix (`pgwarden
// remove`) and returns how many there were. Agents still running recreate
// their member keys and race to initialize: the operator stops them first.
func (e *Store) RemoveCluster(ctx context.Context) (int64, error) {
	cctx, cancel := e.call(ctx)
	defer cancel()
	resp, err := e.cli.Delete(cctx, e.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, e.mapErr("remove cluster keys", err)
	}
	return resp.Deleted, nil
}

// call bounds one etcd request by retry_timeout.
func (e *Store) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.cfg.RetryTimeout)
}

// mapErr turns etcd and gRPC errors into this package's typed errors.
func (e *Store) mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, rpctypes.ErrLeaseNotFound) || strings.Contains(err.Error(), "requested lease not found") {
		e.mu.Lock()
		e.lease = 0
		e.mu.Unlock()
		return fmt.Errorf("%s: %w", op, dcs.ErrLeaseExpired)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
			return fmt.Errorf("%s: %w: %s", op, dcs.ErrUnavailable, s.Message())
		}
	}
	return fmt.Errorf("%s: %w: %v", op, dcs.ErrUnavailable, err)
}

func (e *Store) currentLease() clientv3.LeaseID {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lease
}

// noteWrite remembers the revision of a write this client made.
func (e *Store) noteWrite(rev int64) {
	for {
		cur := e.wrote.Load()
		if rev <= cur || e.wrote.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// Cluster implements dcs.Store: from the watch's view when it is valid and
// has this client's own writes (view.go), else one full read.
func (e *Store) Cluster(ctx context.Context) (*dcs.Cluster, error) {
	if c, ok := e.view.cluster(ctx, e.wrote.Load(), e.cfg.Prefix, e.cfg.RetryTimeout); ok {
		return c, nil
	}
	return e.ClusterFresh(ctx)
}

// ClusterFresh reads the cluster in full (linearizable), whatever the
// view holds: an operator's request is checked against what etcd has
// now, not what the watch delivered so far.
func (e *Store) ClusterFresh(ctx context.Context) (*dcs.Cluster, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, e.mapErr("read cluster", err)
	}
	e.view.seed(resp.Header.Revision, resp.Kvs)
	c := &dcs.Cluster{Revision: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		dcs.DecodeKey(c, strings.TrimPrefix(string(kv.Key), e.cfg.Prefix), kv.Value, kv.ModRevision, kv.Lease)
	}
	return c, nil
}

// Renew implements dcs.Store: one keep-alive per call, from the HA loop, so a
// loop that stops also stops renewing (no background keep-alive that would
// keep a frozen leader's key alive).
func (e *Store) Renew(ctx context.Context) (time.Duration, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	if err := e.settleMove(ctx); err != nil {
		return 0, err
	}
	e.mu.Lock()
	lease, ttl := e.lease, e.ttl
	e.mu.Unlock()
	if lease == 0 {
		secs := int64((ttl + time.Second - 1) / time.Second)
		g, err := e.cli.Grant(ctx, secs)
		if err != nil {
			return 0, e.mapErr("grant lease", err)
		}
		e.mu.Lock()
		e.lease = g.ID
		e.mu.Unlock()
		e.log.Debug("lease granted", "lease", fmt.Sprintf("%x", int64(g.ID)), "ttl", g.TTL)
		return time.Duration(g.TTL) * time.Second, nil
	}
	// The progress request first: the loop steps right after the
	// renewal and reads the view, which its answer keeps fresh.
	e.requestProgress()
	r, err := e.keep.keepAlive(ctx, lease)
	if err != nil {
		return 0, e.mapErr("renew lease", err)
	}
	if r.TTL <= 0 {
		e.mu.Lock()
		e.lease = 0
		e.mu.Unlock()
		return 0, fmt.Errorf("renew lease: %w", dcs.ErrLeaseExpired)
	}
	return time.Duration(r.TTL) * time.Second, nil
}

func (e *Store) needLease(op string) (clientv3.LeaseID, error) {
	l := e.currentLease()
	if l == 0 {
		return 0, fmt.Errorf("%s: %w", op, dcs.ErrLeaseExpired)
	}
	return l, nil
}

// AcquireLeader implements dcs.Store.
func (e *Store) AcquireLeader(ctx context.Context) (bool, error) {
	e.binding.RLock()
	defer e.binding.RUnlock()
	lease, err := e.needLease("acquire leader key")
	if err != nil {
		return false, err
	}
	ctx, cancel := e.call(ctx)
	defer cancel()
	k := e.key(dcs.KeyLeader)
	r, err := e.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, e.cfg.Name, clientv3.WithLease(lease))).
		Commit()
	if err != nil {
		return false, e.mapErr("acquire leader key", err)
	}
	return r.Succeeded, nil
}

// UpdateLeader implements dcs.Store. The key's life is the lease's, renewed by
// Renew; this checks that the key is still ours and bound to our current
// lease, re-binding it when a restarted agent inherited it from an earlier
// lease (whose expiry this process could not see).
func (e *Store) UpdateLeader(ctx context.Context) error {
	e.binding.RLock()
	defer e.binding.RUnlock()
	lease, err := e.needLease("update leader key")
	if err != nil {
		return err
	}
	k := e.key(dcs.KeyLeader)
	// The key is bound to the lease the keeper renews: while the view
	// (which has this client's own writes) shows it ours and bound to that
	// lease, there is nothing to check with etcd.
	if e.view.leaderHeld(k, e.cfg.Name, int64(lease), e.wrote.Load(), e.cfg.RetryTimeout) {
		return nil
	}
	ctx, cancel := e.call(ctx)
	defer cancel()
	r, err := e.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(k), "=", e.cfg.Name),
			clientv3.Compare(clientv3.LeaseValue(k), "=", lease)).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		return e.mapErr("update leader key", err)
	}
	if r.Succeeded {
		return nil
	}
	kvs := r.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 || string(kvs[0].Value) != e.cfg.Name {
		return dcs.ErrNotLeader
	}
	r, err = e.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", kvs[0].ModRevision)).
		Then(clientv3.OpPut(k, e.cfg.Name, clientv3.WithLease(lease))).
		Commit()
	if err != nil {
		return e.mapErr("rebind leader key", err)
	}
	if !r.Succeeded {
		return dcs.ErrNotLeader
	}
	e.log.Info("leader key bound to this agent's lease")
	return nil
}

// LeaseID is this client's current lease (0: none).
func (e *Store) LeaseID() int64 { return int64(e.currentLease()) }

// ReleaseLeaderOfLease deletes the leader key only if it holds this
// member's name and is bound to lease: a request that reaches etcd late
// (a dead agent's watchdog handing the key back) must not delete the key
// a restarted agent has since bound to its own lease.
func (e *Store) ReleaseLeaderOfLease(ctx context.Context, lease int64) error {
	k := e.key(dcs.KeyLeader)
	return e.deleteLeader(ctx, clientv3.Compare(clientv3.LeaseValue(k), "=", clientv3.LeaseID(lease)))
}

// ReleaseLeader implements dcs.Store.
func (e *Store) ReleaseLeader(ctx context.Context) error { return e.deleteLeader(ctx) }

// deleteLeader deletes the leader key if it holds this member's name and
// the extra conditions hold; ErrNotLeader otherwise.
func (e *Store) deleteLeader(ctx context.Context, also ...clientv3.Cmp) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	k := e.key(dcs.KeyLeader)
	cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.Value(k), "=", e.cfg.Name)}, also...)
	r, err := e.kv.Txn(ctx).If(cmps...).Then(clientv3.OpDelete(k)).Commit()
	if err != nil {
		return e.mapErr("release leader key", err)
	}
	if !r.Succeeded {
		return dcs.ErrNotLeader
	}
	return nil
}

// TouchMember implements dcs.Store.
func (e *Store) TouchMember(ctx context.Context, m dcs.Member) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode member: %w", err)
	}
	e.binding.RLock()
	defer e.binding.RUnlock()
	lease, err := e.needLease("write member")
	if err != nil {
		return err
	}
	ctx, cancel := e.call(ctx)
	defer cancel()
	_, err = e.kv.Put(ctx, e.key(dcs.KeyMembers+e.cfg.Name), string(b), clientv3.WithLease(lease))
	return e.mapErr("write member", err)
}

// DeleteMember implements dcs.Store.
func (e *Store) DeleteMember(ctx context.Context) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	_, err := e.kv.Delete(ctx, e.key(dcs.KeyMembers+e.cfg.Name))
	return e.mapErr("delete member", err)
}

// Initialize implements dcs.Store.
func (e *Store) Initialize(ctx context.Context, sysid string) (int64, error) {
	e.binding.RLock()
	defer e.binding.RUnlock()
	var opts []clientv3.OpOption
	if sysid == "" {
		lease, err := e.needLease("initialize")
		if err != nil {
			return 0, err
		}
		opts = append(opts, clientv3.WithLease(lease))
	}
	ctx, cancel := e.call(ctx)
	defer cancel()
	k := e.key(dcs.KeyInitialize)
	r, err := e.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, sysid, opts...)).
		Commit()
	if err != nil {
		return 0, e.mapErr("initialize", err)
	}
	if !r.Succeeded {
		return 0, nil
	}
	return r.Header.Revision, nil
}

// cas writes (value non-nil) or deletes key if its ModRevision is prev;
// etcd compares a missing key as revision 0.
func (e *Store) cas(ctx context.Context, op, key string, value []byte, prev int64) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	k := e.key(key)
	do := clientv3.OpDelete(k)
	if value != nil {
		do = clientv3.OpPut(k, string(value))
	}
	r, err := e.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", prev)).
		Then(do).
		Commit()
	if err != nil {
		return e.mapErr(op, err)
	}
	if !r.Succeeded {
		return fmt.Errorf("%s: %w", op, dcs.ErrKeyModified)
	}
	return nil
}

// SetInitialize implements dcs.Store.
func (e *Store) SetInitialize(ctx context.Context, sysid string, prev int64) error {
	return e.cas(ctx, "record system identifier", dcs.KeyInitialize, []byte(sysid), prev)
}

// CancelInitialize implements dcs.Store.
func (e *Store) CancelInitialize(ctx context.Context, prev int64) error {
	return e.cas(ctx, "cancel initialize", dcs.KeyInitialize, nil, prev)
}

// SetConfig implements dcs.Store.
func (e *Store) SetConfig(ctx context.Context, raw []byte, prev int64) error {
	return e.cas(ctx, "write config", dcs.KeyConfig, append([]byte{}, raw...), prev)
}

// SetFailover implements dcs.Store.
func (e *Store) SetFailover(ctx context.Context, f dcs.Failover, prev int64) error {
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode failover request: %w", err)
	}
	return e.cas(ctx, "write failover request", dcs.KeyFailover, b, prev)
}

// DeleteFailover implements dcs.Store.
func (e *Store) DeleteFailover(ctx context.Context, prev int64) error {
	if prev != 0 {
		err := e.cas(ctx, "delete failover request", dcs.KeyFailover, nil, prev)
		return err
	}
	ctx, cancel := e.call(ctx)
	defer cancel()
	_, err := e.kv.Delete(ctx, e.key(dcs.KeyFailover))
	return e.mapErr("delete failover request", err)
}

// SetSync implements dcs.Store.
func (e *Store) SetSync(ctx context.Context, s dcs.Sync, prev int64) error {
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("encode sync state: %w", err)
	}
	return e.cas(ctx, "write sync state", dcs.KeySync, b, prev)
}

// AppendHistory implements dcs.Store: read, append, compare-and-swap, retried a
// few times against concurrent writers.
func (e *Store) AppendHistory(ctx context.Context, h dcs.HistoryEntry) error {
	return e.rewrite(ctx, "append history", "history", dcs.KeyHistory, func(cur []byte) ([]byte, error) {
		var hist []dcs.HistoryEntry
		if cur != nil {
			if err := json.Unmarshal(cur, &hist); err != nil {
				e.log.Warn("history key is not valid JSON: starting it afresh", "error", err)
				hist = nil
			}
		}
		b, err := json.Marshal(dcs.RecordHistory(hist, h))
		if err != nil {
			return nil, fmt.Errorf("encode history: %w", err)
		}
		return b, nil
	})
}

// rewrite reads key (what names it in errors), lets change make its new value
// from the current one (nil when the key is absent), and writes it with a
// compare-and-swap on the revision read: a concurrent writer in between makes
// it read and change again, a few times at most. An error from change ends it
// as it is.
func (e *Store) rewrite(ctx context.Context, op, what, key string, change func(cur []byte) ([]byte, error)) error {
	for range 5 {
		cctx, cancel := e.call(ctx)
		r, err := e.cli.Get(cctx, e.key(key))
		cancel()
		if err != nil {
			return e.mapErr("read "+what, err)
		}
		var cur []byte
		var rev int64
		if len(r.Kvs) > 0 {
			rev = r.Kvs[0].ModRevision
			cur = r.Kvs[0].Value
			if cur == nil {
				cur = []byte{}
			}
		}
		b, err := change(cur)
		if err != nil {
			return err
		}
		err = e.cas(ctx, op, key, b, rev)
		if !errors.Is(err, dcs.ErrKeyModified) {
			return err
		}
	}
	return fmt.Errorf("%s: %w", op, dcs.ErrKeyModified)
}

// SetStatus implements dcs.Store.
func (e *Store) SetStatus(ctx context.Context, s dcs.Status) error {
	return e.leaderPut(ctx, "write status", dcs.KeyStatus, s)
}

// SetFailsafe implements dcs.Store.
func (e *Store) SetFailsafe(ctx context.Context, members []string) error {
	return e.leaderPut(ctx, "write failsafe members", dcs.KeyFailsafe, members)
}

// leaderPut writes v (JSON) at key in a transaction that requires this
// member to hold the leader key.
func (e *Store) leaderPut(ctx context.Context, op, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", op, err)
	}
	ctx, cancel := e.call(ctx)
	defer cancel()
	r, err := e.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(e.key(dcs.KeyLeader)), "=", e.cfg.Name)).
		Then(clientv3.OpPut(e.key(key), string(b))).
		Commit()
	if err != nil {
		return e.mapErr(op, err)
	}
	if !r.Succeeded {
		return fmt.Errorf("%s: %w", op, dcs.ErrNotLeader)
	}
	return nil
}

// Watch implements dcs.Store. The first watch is established before Watch
// returns when etcd answers within retry_timeout (so a change made right
// after is seen; an etcd that does not answer must not hold up the
// agent's start); it is re-established after errors (etcd restart,
// compaction, lost quorum) from the last revision seen, and a signal is
// sent then because changes may have been missed. The first Watch of a
// client also keeps its view (view.go); later ones only signal.
func (e *Store) Watch(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	signal := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	var v *view
	if e.viewOwned.CompareAndSwap(false, true) {
		v = e.view
	}
	var rev int64
	wctx := clientv3.WithRequireLeader(ctx)
	open := func() (clientv3.WatchChan, context.CancelFunc) {
		cctx, cancel := context.WithCancel(wctx)
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCreatedNotify()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev+1))
		}
		return e.cli.Watch(cctx, e.cfg.Prefix, opts...), cancel
	}
	if v != nil {
		// Progress requests go on this watch's stream (the same context
		// metadata): they show the stream still delivers.
		e.progress.Store(&wctx)
	}
	ready := make(chan struct{})
	go func() {
		backoff := 100 * time.Millisecond
		wch, cancel := open()
		first := true
		for {
			for resp := range wch {
				if err := resp.Err(); err != nil {
					e.log.Debug("etcd watch ended", "error", err)
					if resp.CompactRevision > 0 {
						rev = 0
					}
					break
				}
				if resp.Created {
					// From here the watch delivers every change after
					// rev: the view may be seeded.
					rev = max(rev, resp.Header.Revision)
					v.started(rev)
					if first {
						first = false
						close(ready)
					}
					continue
				}
				v.fresh(time.Now())
				v.apply(resp.Events)
				for _, ev := range resp.Events {
					rev = max(rev, ev.Kv.ModRevision)
				}
				if wakes(resp.Events, e.cfg.Prefix) {
					signal()
					backoff = 100 * time.Millisecond
				}
			}
			cancel()
			v.stopped()
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			wch, cancel = open()
			signal()
		}
	}()
	select {
	case <-ready:
	case <-time.After(e.cfg.RetryTimeout):
	case <-ctx.Done():
	}
	return out
}

// requestProgress asks the view's watch stream to report its revision, so
// a stream that stopped delivering shows as stale (with each renewal: the
// view's freshness then follows the renewal's cadence). Asking only once
// the view was half its bound old let it go stale between two renewals
// when loop_wait is near half of retry_timeout, and under load (a flood of
// REST reads, TestLeaderLeaseLive) those reads then went to etcd.
func (e *Store) requestProgress() {
	p := e.progress.Load()
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(*p, e.cfg.RetryTimeout)
	go func() {
		defer cancel()
		_ = e.cli.RequestProgress(ctx)
	}()
}

// wakes reports whether any event is one the HA loop must react to: all
// but puts of the quiet keys (see Store.Watch).
func wakes(evs []*clientv3.Event, prefix string) bool {
	for _, ev := range evs {
		if ev.Type != clientv3.EventTypePut || !dcs.QuietKey(strings.TrimPrefix(string(ev.Kv.Key), prefix)) {
			return true
		}
	}
	return false
}

// MoveLease implements dcs.Store: the keep-alive first (the current lease
// must be alive, or its keys are gone and nothing moves), then one read of
// the cluster's keys bound to it, the grant, and the transaction, all
// within one retry_timeout. The old lease is revoked after.
func (e *Store) MoveLease(ctx context.Context, ttl time.Duration) (time.Duration, error) {
	e.mu.Lock()
	old := e.lease
	prev := e.ttl
	if old == 0 {
		// No lease to move: the next one is granted with ttl, unless
		// etcd refuses it (then the ttl that worked is kept).
		e.ttl = ttl
	}
	e.mu.Unlock()
	if old == 0 {
		granted, err := e.Renew(ctx)
		if err != nil {
			e.mu.Lock()
			if e.ttl == ttl {
				e.ttl = prev
			}
			e.mu.Unlock()
		}
		return granted, err
	}
	granted, drop, err := e.moveKeys(ctx, ttl)
	if drop != 0 {
		e.revoke(ctx, drop)
	}
	return granted, err
}

// moveKeys is MoveLease's part that writes binding keys to the lease wait
// for; drop is the lease to revoke after (the old one once the keys moved,
// the new one when they did not).
func (e *Store) moveKeys(ctx context.Context, ttl time.Duration) (granted time.Duration, drop clientv3.LeaseID, err error) {
	e.binding.Lock()
	defer e.binding.Unlock()
	cctx, cancel := e.call(ctx)
	defer cancel()
	if err := e.settleMove(cctx); err != nil {
		return 0, 0, err
	}
	old := e.currentLease()
	if old == 0 {
		return 0, 0, fmt.Errorf("move lease: %w", dcs.ErrLeaseExpired)
	}
	if r, err := e.keep.keepAlive(cctx, old); err != nil {
		return 0, 0, e.mapErr("move lease: renew the current one", err)
	} else if r.TTL <= 0 {
		e.forget(old)
		return 0, 0, fmt.Errorf("move lease: %w", dcs.ErrLeaseExpired)
	}
	// From here on the current lease is renewed: a failure before the
	// transaction leaves the keys on it (ErrNotMoved), not unrenewed.
	resp, err := e.cli.Get(cctx, e.cfg.Prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, 0, fmt.Errorf("%w (%w)", e.mapErr("move lease: read its keys", err), dcs.ErrNotMoved)
	}
	var moving []*mvccpb.KeyValue
	for _, kv := range resp.Kvs {
		if kv.Lease != int64(old) {
			continue
		}
		if k := strings.TrimPrefix(string(kv.Key), e.cfg.Prefix); k != dcs.KeyLeader && k != dcs.KeyMembers+e.cfg.Name {
			return 0, 0, fmt.Errorf("move lease: %s: %w", k, dcs.ErrLeaseInUse)
		}
		moving = append(moving, kv)
	}
	g, err := e.cli.Grant(cctx, int64((ttl+time.Second-1)/time.Second))
	if err != nil {
		return 0, 0, fmt.Errorf("%w (%w)", e.mapErr("move lease: grant", err), dcs.ErrNotMoved)
	}
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, kv := range moving {
		k := string(kv.Key)
		if k == e.key(dcs.KeyLeader) {
			cmps = append(cmps, clientv3.Compare(clientv3.Value(k), "=", e.cfg.Name))
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", kv.ModRevision),
			clientv3.Compare(clientv3.LeaseValue(k), "=", old))
		ops = append(ops, clientv3.OpPut(k, string(kv.Value), clientv3.WithLease(g.ID)))
	}
	r, err := e.kv.Txn(cctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		// It may have committed: the keys may be on either lease.
		e.mu.Lock()
		e.unsure, e.unsureTTL = g.ID, ttl
		e.mu.Unlock()
		return 0, 0, fmt.Errorf("%w (%w)", e.mapErr("move lease: move its keys", err), dcs.ErrUnsettled)
	}
	if !r.Succeeded {
		return 0, g.ID, fmt.Errorf("move lease: %w", dcs.ErrKeyModified)
	}
	e.mu.Lock()
	e.lease, e.ttl = g.ID, ttl
	e.mu.Unlock()
	e.log.Info("lease moved", "lease", fmt.Sprintf("%x", int64(g.ID)), "ttl", g.TTL, "keys", len(ops))
	return time.Duration(g.TTL) * time.Second, old, nil
}

// settleMove finds out, after a move whose transaction got no answer,
// which lease the keys are on: that one is kept, the other revoked.
func (e *Store) settleMove(ctx context.Context) error {
	e.mu.Lock()
	unsure, cur := e.unsure, e.lease
	e.mu.Unlock()
	if unsure == 0 {
		return nil
	}
	r, err := e.cli.TimeToLive(ctx, unsure, clientv3.WithAttachedKeys())
	if err != nil {
		return e.mapErr("settle lease move", err)
	}
	keep, drop := cur, unsure
	moved := r.TTL > 0 && len(r.Keys) > 0
	if moved {
		keep, drop = unsure, cur
	}
	e.mu.Lock()
	e.lease, e.unsure = keep, 0
	if moved {
		e.ttl = e.unsureTTL
	}
	e.mu.Unlock()
	if drop != 0 {
		e.revoke(ctx, drop)
	}
	e.log.Info("lease move settled", "lease", fmt.Sprintf("%x", int64(keep)), "moved", keep == unsure)
	return nil
}

// revoke ends a lease this client no longer uses; one that cannot be
// revoked now expires by itself.
func (e *Store) revoke(ctx context.Context, id clientv3.LeaseID) {
	cctx, cancel := e.call(context.WithoutCancel(ctx))
	defer cancel()
	if _, err := e.cli.Revoke(cctx, id); err != nil {
		e.log.Debug("cannot revoke the old lease: it expires by itself", "lease", fmt.Sprintf("%x", int64(id)), "error", err)
	}
}

// forget drops the current lease if it is still id.
func (e *Store) forget(id clientv3.LeaseID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lease == id {
		e.lease = 0
	}
}

// Close implements dcs.Store: the lease is revoked (deleting the member key
// and, when held, the leader key) and the client closed.
func (e *Store) Close(ctx context.Context) error {
	var err error
	e.mu.Lock()
	unsure := e.unsure
	e.unsure = 0
	e.mu.Unlock()
	if unsure != 0 {
		// The keys may be on it.
		e.revoke(ctx, unsure)
	}
	if l := e.currentLease(); l != 0 {
		cctx, cancel := e.call(ctx)
		_, err = e.cli.Revoke(cctx, l)
		cancel()
		err = e.mapErr("revoke lease", err)
		e.mu.Lock()
		e.lease = 0
		e.mu.Unlock()
	}
	// The client first: a renewal in flight then ends at once.
	cerr := e.cli.Close()
	e.keep.close()
	return errors.Join(err, cerr)
}
