package etcd

import (
	"context"
	"encoding/json"
	"errors"
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

// RecordBackupRun implements dcs.Store: read, set, compare-and-swap, retried
// against concurrent writers.
func (e *Store) RecordBackupRun(ctx context.Context, run dcs.BackupRun) error {
	for range 5 {
		cctx, cancel := e.call(ctx)
		r, err := e.cli.Get(cctx, e.key(dcs.KeyBackupRuns))
		cancel()
		if err != nil {
			return e.mapErr("read backup runs", err)
		}
		runs := map[string]dcs.BackupRun{}
		var rev int64
		if len(r.Kvs) > 0 {
			rev = r.Kvs[0].ModRevision
			_ = json.Unmarshal(r.Kvs[0].Value, &runs)
		}
		runs[run.Kind] = run
		b, err := json.Marshal(runs)
		if err != nil {
			return fmt.Errorf("encode backup runs: %w", err)
		}
		err = e.cas(ctx, "record backup run", dcs.KeyBackupRuns, b, rev)
		if !errors.Is(err, dcs.ErrKeyModified) {
			return err
		}
	}
	return fmt.Errorf("record backup run: %w", dcs.ErrKeyModified)
}
