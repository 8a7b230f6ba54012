package dcs

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// MemoryCluster is an in-memory etcd stand-in shared by several Memory
// clients: keys with revisions, leases that expire by an injected clock, and
// watches. It is deterministic (no goroutines, no wall clock) so that a
// simulated cluster replays exactly from a seed.
type MemoryCluster struct {
	mu          sync.Mutex
	now         func() time.Time
	rev         int64
	keys        map[string]*memKey
	leases      map[int64]*memLease
	nextLease   int64
	unreachable map[string]bool
	watchers    []chan struct{}
}

type memKey struct {
	value     []byte
	createRev int64
	modRev    int64
	lease     int64
}

type memLease struct {
	ttl     time.Duration
	expires time.Time
}

// NewMemoryCluster makes an empty store whose leases expire by now.
func NewMemoryCluster(now func() time.Time) *MemoryCluster {
	return &MemoryCluster{now: now, keys: map[string]*memKey{}, leases: map[int64]*memLease{}, unreachable: map[string]bool{}}
}

// Client is one member's connection to the store.
func (mc *MemoryCluster) Client(name string, ttl time.Duration) *Memory {
	return &Memory{mc: mc, name: name, ttl: ttl}
}

// SetReachable makes a member's calls fail with ErrUnavailable (false) or
// succeed again (true), as an etcd outage or partition would.
func (mc *MemoryCluster) SetReachable(name string, ok bool) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if ok {
		delete(mc.unreachable, name)
	} else {
		mc.unreachable[name] = true
	}
}

// Expire deletes the leases that have expired by now, with their keys.
func (mc *MemoryCluster) Expire() {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	mc.expireLocked()
}

func (mc *MemoryCluster) expireLocked() {
	now := mc.now()
	ids := make([]int64, 0, len(mc.leases))
	for id, l := range mc.leases {
		if !now.Before(l.expires) {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		mc.revokeLocked(id)
	}
}

func (mc *MemoryCluster) revokeLocked(id int64) {
	delete(mc.leases, id)
	names := make([]string, 0)
	for k, v := range mc.keys {
		if v.lease == id {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return
	}
	sort.Strings(names)
	mc.rev++
	for _, k := range names {
		delete(mc.keys, k)
	}
	mc.notifyLocked()
}

func (mc *MemoryCluster) notifyLocked() {
	for _, w := range mc.watchers {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

func (mc *MemoryCluster) putLocked(key string, value []byte, lease int64) {
	mc.rev++
	k := mc.keys[key]
	if k == nil {
		k = &memKey{createRev: mc.rev}
		mc.keys[key] = k
	}
	k.value, k.modRev, k.lease = append([]byte(nil), value...), mc.rev, lease
	if !QuietKey(key) {
		mc.notifyLocked()
	}
}

func (mc *MemoryCluster) deleteLocked(key string) {
	if _, ok := mc.keys[key]; !ok {
		return
	}
	mc.rev++
	delete(mc.keys, key)
	mc.notifyLocked()
}

// Memory is one member's client of a MemoryCluster; it implements Store.
type Memory struct {
	mc    *MemoryCluster
	name  string
	mu    sync.Mutex
	ttl   time.Duration
	lease int64
}

var _ Store = (*Memory)(nil)

// begin locks the store, expires leases and checks reachability.
func (m *Memory) begin(op string) (func(), error) {
	m.mc.mu.Lock()
	m.mc.expireLocked()
	if m.mc.unreachable[m.name] {
		m.mc.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", op, ErrUnavailable)
	}
	return m.mc.mu.Unlock, nil
}

func (m *Memory) ourLease() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lease
}

// Cluster implements Store.
func (m *Memory) Cluster(ctx context.Context) (*Cluster, error) {
	unlock, err := m.begin("read cluster")
	if err != nil {
		return nil, err
	}
	defer unlock()
	c := &Cluster{Revision: m.mc.rev}
	keys := make([]string, 0, len(m.mc.keys))
	for k := range m.mc.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := m.mc.keys[k]
		DecodeKey(c, k, v.value, v.modRev, v.lease)
	}
	return c, nil
}

// DecodeKey fills one key of the cluster view; malformed values are skipped.
func DecodeKey(c *Cluster, key string, value []byte, modRev, lease int64) {
	switch {
	case key == KeyInitialize:
		c.Initialize, c.InitializeRevision = string(value), modRev
	case key == KeyConfig:
		c.Config, c.ConfigRevision = append([]byte(nil), value...), modRev
	case key == KeyLeader:
		c.Leader = &Leader{Name: string(value), Revision: modRev, LeaseID: lease}
	case key == KeyFailover:
		var f Failover
		if json.Unmarshal(value, &f) == nil {
			f.Revision = modRev
			c.Failover = &f
		}
	case key == KeySync:
		var s Sync
		if json.Unmarshal(value, &s) == nil {
			s.Revision = modRev
			c.Sync = &s
		}
	case key == KeyHistory:
		_ = json.Unmarshal(value, &c.History)
	case key == KeyStatus:
		_ = json.Unmarshal(value, &c.Status)
	case key == KeyFailsafe:
		_ = json.Unmarshal(value, &c.Failsafe)
	case key == KeyBackupLock:
		var l BackupLock
		if json.Unmarshal(value, &l) == nil {
			l.Revision = modRev
			c.BackupLock = &l
		}
	case key == KeyBackupRuns:
		_ = json.Unmarshal(value, &c.BackupRuns)
	case strings.HasPrefix(key, KeyMembers):
		var mem Member
		if json.Unmarshal(value, &mem) == nil {
			mem.Name = strings.TrimPrefix(key, KeyMembers)
			mem.Revision = modRev
			c.Members = append(c.Members, mem)
		}
	}
}

// Renew implements Store.
func (m *Memory) Renew(ctx context.Context) (time.Duration, error) {
	unlock, err := m.begin("renew lease")
	if err != nil {
		return 0, err
	}
	defer unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.mc.now()
	if m.lease != 0 {
		l := m.mc.leases[m.lease]
		if l == nil {
			m.lease = 0
			return 0, ErrLeaseExpired
		}
		l.expires = now.Add(l.ttl)
		return l.ttl, nil
	}
	m.mc.nextLease++
	m.lease = m.mc.nextLease
	m.mc.leases[m.lease] = &memLease{ttl: m.ttl, expires: now.Add(m.ttl)}
	return m.ttl, nil
}

// AcquireLeader implements Store.
func (m *Memory) AcquireLeader(ctx context.Context) (bool, error) {
	unlock, err := m.begin("acquire leader key")
	if err != nil {
		return false, err
	}
	defer unlock()
	lease := m.ourLease()
	if lease == 0 || m.mc.leases[lease] == nil {
		return false, fmt.Errorf("acquire leader key: %w", ErrLeaseExpired)
	}
	if _, ok := m.mc.keys[KeyLeader]; ok {
		return false, nil
	}
	m.mc.putLocked(KeyLeader, []byte(m.name), lease)
	return true, nil
}

// UpdateLeader implements Store.
func (m *Memory) UpdateLeader(ctx context.Context) error {
	unlock, err := m.begin("update leader key")
	if err != nil {
		return err
	}
	defer unlock()
	k := m.mc.keys[KeyLeader]
	if k == nil || string(k.value) != m.name {
		return ErrNotLeader
	}
	if lease := m.ourLease(); k.lease != lease && lease != 0 && m.mc.leases[lease] != nil {
		// A restarted agent re-binds its own key to its new lease.
		m.mc.putLocked(KeyLeader, k.value, lease)
	}
	return nil
}

// ReleaseLeader implements Store.
func (m *Memory) ReleaseLeader(ctx context.Context) error {
	unlock, err := m.begin("release leader key")
	if err != nil {
		return err
	}
	defer unlock()
	k := m.mc.keys[KeyLeader]
	if k == nil || string(k.value) != m.name {
		return ErrNotLeader
	}
	m.mc.deleteLocked(KeyLeader)
	return nil
}

// TouchMember implements Store.
func (m *Memory) TouchMember(ctx context.Context, mem Member) error {
	b, err := json.Marshal(mem)
	if err != nil {
		return fmt.Errorf("encode member: %w", err)
	}
	unlock, err := m.begin("write member")
	if err != nil {
		return err
	}
	defer unlock()
	lease := m.ourLease()
	if lease == 0 || m.mc.leases[lease] == nil {
		return fmt.Errorf("write member: %w", ErrLeaseExpired)
	}
	m.mc.putLocked(KeyMembers+m.name, b, lease)
	return nil
}

// DeleteMember implements Store.
func (m *Memory) DeleteMember(ctx context.Context) error {
	unlock, err := m.begin("delete member")
	if err != nil {
		return err
	}
	defer unlock()
	m.mc.deleteLocked(KeyMembers + m.name)
	return nil
}

// Initialize implements Store.
func (m *Memory) Initialize(ctx context.Context, sysid string) (int64, error) {
	unlock, err := m.begin("initialize")
	if err != nil {
		return 0, err
	}
	defer unlock()
	var lease int64
	if sysid == "" {
		lease = m.ourLease()
		if lease == 0 || m.mc.leases[lease] == nil {
			return 0, fmt.Errorf("initialize: %w", ErrLeaseExpired)
		}
	}
	if _, ok := m.mc.keys[KeyInitialize]; ok {
		return 0, nil
	}
	m.mc.putLocked(KeyInitialize, []byte(sysid), lease)
	return m.mc.rev, nil
}

// cas writes (or deletes, with value nil) key if its ModRevision is prev
// (0: absent).
func (m *Memory) cas(op, key string, value []byte, prev int64) error {
	unlock, err := m.begin(op)
	if err != nil {
		return err
	}
	defer unlock()
	k := m.mc.keys[key]
	cur := int64(0)
	if k != nil {
		cur = k.modRev
	}
	if cur != prev {
		return fmt.Errorf("%s: %w", op, ErrKeyModified)
	}
	if value == nil {
		m.mc.deleteLocked(key)
	} else {
		m.mc.putLocked(key, value, 0)
	}
	return nil
}

// SetInitialize implements Store.
func (m *Memory) SetInitialize(ctx context.Context, sysid string, prev int64) error {
	return m.cas("record system identifier", KeyInitialize, []byte(sysid), prev)
}

// CancelInitialize implements Store.
func (m *Memory) CancelInitialize(ctx context.Context, prev int64) error {
	return m.cas("cancel initialize", KeyInitialize, nil, prev)
}

// SetConfig implements Store.
func (m *Memory) SetConfig(ctx context.Context, raw []byte, prev int64) error {
	return m.cas("write config", KeyConfig, append([]byte{}, raw...), prev)
}

// SetFailover implements Store.
func (m *Memory) SetFailover(ctx context.Context, f Failover, prev int64) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return m.cas("write failover request", KeyFailover, b, prev)
}

// DeleteFailover implements Store.
func (m *Memory) DeleteFailover(ctx context.Context, prev int64) error {
	unlock, err := m.begin("delete failover request")
	if err != nil {
		return err
	}
	defer unlock()
	k := m.mc.keys[KeyFailover]
	if k == nil {
		return nil
	}
	if prev != 0 && k.modRev != prev {
		return fmt.Errorf("delete failover request: %w", ErrKeyModified)
	}
	m.mc.deleteLocked(KeyFailover)
	return nil
}

// SetSync implements Store.
func (m *Memory) SetSync(ctx context.Context, s Sync, prev int64) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return m.cas("write sync state", KeySync, b, prev)
}

// AppendHistory implements Store.
func (m *Memory) AppendHistory(ctx context.Context, e HistoryEntry) error {
	return m.rewrite("append history", KeyHistory, func(cur []byte) ([]byte, error) {
		var h []HistoryEntry
		if cur != nil {
			_ = json.Unmarshal(cur, &h)
		}
		return json.Marshal(RecordHistory(h, e))
	})
}

// rewrite replaces key's value by what change makes of the current one (nil
// when the key is absent), in one step under the cluster's lock: the memory
// store's read-modify-write needs no compare-and-swap. An error from change
// ends it as it is.
func (m *Memory) rewrite(op, key string, change func(cur []byte) ([]byte, error)) error {
	unlock, err := m.begin(op)
	if err != nil {
		return err
	}
	defer unlock()
	var cur []byte
	if k := m.mc.keys[key]; k != nil {
		cur = k.value
	}
	b, err := change(cur)
	if err != nil {
		return err
	}
	m.mc.putLocked(key, b, 0)
	return nil
}

// SetStatus implements Store.
func (m *Memory) SetStatus(ctx context.Context, s Status) error {
	return m.leaderPut("write status", KeyStatus, s)
}

// SetFailsafe implements Store.
func (m *Memory) SetFailsafe(ctx context.Context, members []string) error {
	return m.leaderPut("write failsafe members", KeyFailsafe, members)
}

// leaderPut writes v (JSON) at key while this member holds the leader key.
func (m *Memory) leaderPut(op, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	unlock, err := m.begin(op)
	if err != nil {
		return err
	}
	defer unlock()
	k := m.mc.keys[KeyLeader]
	if k == nil || string(k.value) != m.name {
		return fmt.Errorf("%s: %w", op, ErrNotLeader)
	}
	m.mc.putLocked(key, b, 0)
	return nil
}

// Watch implements Store.
func (m *Memory) Watch(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	m.mc.mu.Lock()
	m.mc.watchers = append(m.mc.watchers, ch)
	m.mc.mu.Unlock()
	go func() {
		<-ctx.Done()
		m.mc.mu.Lock()
		defer m.mc.mu.Unlock()
		for i, w := range m.mc.watchers {
			if w == ch {
				m.mc.watchers = append(m.mc.watchers[:i], m.mc.watchers[i+1:]...)
				break
			}
		}
	}()
	return ch
}

// MoveLease implements Store.
func (m *Memory) MoveLease(ctx context.Context, ttl time.Duration) (time.Duration, error) {
	m.mu.Lock()
	old := m.lease
	if old == 0 {
		// No lease to move: the next one is granted with ttl.
		m.ttl = ttl
	}
	m.mu.Unlock()
	if old == 0 {
		return m.Renew(ctx)
	}
	unlock, err := m.begin("move lease")
	if err != nil {
		return 0, err
	}
	defer unlock()
	if m.mc.leases[old] == nil {
		m.mu.Lock()
		m.lease = 0
		m.mu.Unlock()
		return 0, fmt.Errorf("move lease: %w", ErrLeaseExpired)
	}
	var bound []string
	for k, v := range m.mc.keys {
		if v.lease != old {
			continue
		}
		if (k != KeyLeader || string(v.value) != m.name) && k != KeyMembers+m.name {
			return 0, fmt.Errorf("move lease: %s: %w", k, ErrLeaseInUse)
		}
		bound = append(bound, k)
	}
	sort.Strings(bound)
	m.mc.nextLease++
	id := m.mc.nextLease
	m.mc.leases[id] = &memLease{ttl: ttl, expires: m.mc.now().Add(ttl)}
	for _, k := range bound {
		m.mc.putLocked(k, m.mc.keys[k].value, id)
	}
	delete(m.mc.leases, old)
	m.mu.Lock()
	m.lease, m.ttl = id, ttl
	m.mu.Unlock()
	return ttl, nil
}

// Close implements Store: the lease is revoked with its keys.
func (m *Memory) Close(ctx context.Context) error {
	m.mc.mu.Lock()
	defer m.mc.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lease != 0 {
		m.mc.revokeLocked(m.lease)
		m.lease = 0
	}
	return nil
}

// LeaderKey is the holder of the leader key and its revision ("" and 0
// when there is none), read without decoding the store: the simulation's
// invariant checks ask after every step.
func (mc *MemoryCluster) LeaderKey() (string, int64) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	mc.expireLocked()
	k := mc.keys[KeyLeader]
	if k == nil {
		return "", 0
	}
	return string(k.value), k.modRev
}

// LeaderLease is the lease the leader key is bound to: its ID, TTL and
// when it expires (zeros when there is no leader key), for the
// simulation's checks.
func (mc *MemoryCluster) LeaderLease() (int64, time.Duration, time.Time) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	mc.expireLocked()
	k := mc.keys[KeyLeader]
	if k == nil || mc.leases[k.lease] == nil {
		return 0, 0, time.Time{}
	}
	l := mc.leases[k.lease]
	return k.lease, l.ttl, l.expires
}

// MemberNames are the members whose key exists now.
func (mc *MemoryCluster) MemberNames() []string {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	mc.expireLocked()
	var out []string
	for k := range mc.keys {
		if name, ok := strings.CutPrefix(k, KeyMembers); ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}
