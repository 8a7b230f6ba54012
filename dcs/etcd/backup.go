package etcd

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pgwarden/pgwarden/dcs"
)

// AcquireBackupLock implements dcs.Store.
func (e *Store) AcquireBackupLock(ctx context.Context, l dcs.BackupLock) (int64, error) {
	b, err := json.Marshal(l)
	if err != nil {
		return 0, fmt.Errorf("encode backup lock: %w", err)
	}
	e.binding.RLock()
	defer e.binding.RUnlock()
	lease, err := e.needLease("take backup lock")
	if err != nil {
		return 0, err
	}
	ctx, cancel := e.call(ctx)
	defer cancel()
	k := e.key(dcs.KeyBackupLock)
	r, err := e.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(b), clientv3.WithLease(lease))).
		Commit()
	if err != nil {
		return 0, e.mapErr("take backup lock", err)
	}
	if !r.Succeeded {
		return 0, fmt.Errorf("take backup lock: %w", dcs.ErrKeyModified)
	}
	return r.Header.Revision, nil
}

// UpdateBackupLock implements dcs.Store.
func (e *Store) UpdateBackupLock(ctx context.Context, l dcs.BackupLock, rev int64) (int64, error) {
	b, err := json.Marshal(l)
	if err != nil {
		return 0, fmt.Errorf("encode backup lock: %w", err)
	}
	ctx, cancel := e.call(ctx)
	defer cancel()
	k := e.key(dcs.KeyBackupLock)
	r, err := e.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
		Then(clientv3.OpPut(k, string(b), clientv3.WithIgnoreLease())).
		Commit()
	if err != nil {
		return 0, e.mapErr("update backup lock", err)
	}
	if !r.Succeeded {
		return 0, fmt.Errorf("update backup lock: %w", dcs.ErrKeyModified)
	}
	return r.Header.Revision, nil
}

// ReleaseBackupLock implements dcs.Store.
func (e *Store) ReleaseBackupLock(ctx context.Context, rev int64) error {
	return e.cas(ctx, "release backup lock", dcs.KeyBackupLock, nil, rev)
}

// RecordBackupRun implements dcs.Store.
func (e *Store) RecordBackupRun(ctx context.Context, run dcs.BackupRun) error {
	return e.updateBackupRuns(ctx, "record backup run", func(runs map[string]dcs.BackupRun) error {
		dcs.PutRun(runs, run)
		return nil
	})
}

// UpdateBackupSlot implements dcs.Store.
func (e *Store) UpdateBackupSlot(ctx context.Context, kind string, prev *dcs.BackupSlot, next dcs.BackupSlot) error {
	return e.updateBackupRuns(ctx, "claim backup slot", func(runs map[string]dcs.BackupRun) error {
		return dcs.SetSlot(runs, kind, prev, next)
	})
}

// updateBackupRuns reads the runs, lets change edit them, and writes them
// back with a compare-and-swap, retried against concurrent writers (of
// other kinds: change's own refusal ends it).
func (e *Store) updateBackupRuns(ctx context.Context, op string, change func(map[string]dcs.BackupRun) error) error {
	return e.rewrite(ctx, op, "backup runs", dcs.KeyBackupRuns, func(cur []byte) ([]byte, error) {
		runs := map[string]dcs.BackupRun{}
		if cur != nil {
			_ = json.Unmarshal(cur, &runs)
		}
		if err := change(runs); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		b, err := json.Marshal(runs)
		if err != nil {
			return nil, fmt.Errorf("encode backup runs: %w", err)
		}
		return b, nil
	})
}
