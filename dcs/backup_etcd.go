package dcs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// AcquireBackupLock implements Store.
func (e *Etcd) AcquireBackupLock(ctx context.Context, l BackupLock) (int64, error) {
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
	k := e.key(keyBackupLock)
	r, err := e.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(b), clientv3.WithLease(lease))).
		Commit()
	if err != nil {
		return 0, e.mapErr("take backup lock", err)
	}
	if !r.Succeeded {
		return 0, fmt.Errorf("take backup lock: %w", ErrKeyModified)
	}
	return r.Header.Revision, nil
}

// UpdateBackupLock implements Store.
func (e *Etcd) UpdateBackupLock(ctx context.Context, l BackupLock, rev int64) (int64, error) {
	b, err := json.Marshal(l)
	if err != nil {
		return 0, fmt.Errorf("encode backup lock: %w", err)
	}
	ctx, cancel := e.call(ctx)
	defer cancel()
	k := e.key(keyBackupLock)
	r, err := e.kv.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).
		Then(clientv3.OpPut(k, string(b), clientv3.WithIgnoreLease())).
		Commit()
	if err != nil {
		return 0, e.mapErr("update backup lock", err)
	}
	if !r.Succeeded {
		return 0, fmt.Errorf("update backup lock: %w", ErrKeyModified)
	}
	return r.Header.Revision, nil
}

// ReleaseBackupLock implements Store.
func (e *Etcd) ReleaseBackupLock(ctx context.Context, rev int64) error {
	return e.cas(ctx, "release backup lock", keyBackupLock, nil, rev)
}

// RecordBackupRun implements Store.
func (e *Etcd) RecordBackupRun(ctx context.Context, run BackupRun) error {
	return e.updateBackupRuns(ctx, "record backup run", func(runs map[string]BackupRun) error {
		putRun(runs, run)
		return nil
	})
}

// UpdateBackupSlot implements Store.
func (e *Etcd) UpdateBackupSlot(ctx context.Context, kind string, prev *BackupSlot, next BackupSlot) error {
	return e.updateBackupRuns(ctx, "claim backup slot", func(runs map[string]BackupRun) error {
		return setSlot(runs, kind, prev, next)
	})
}

// updateBackupRuns reads the runs, lets change edit them, and writes them
// back with a compare-and-swap, retried against concurrent writers (of
// other kinds: change's own refusal ends it).
func (e *Etcd) updateBackupRuns(ctx context.Context, op string, change func(map[string]BackupRun) error) error {
	for range 5 {
		cctx, cancel := e.call(ctx)
		r, err := e.cli.Get(cctx, e.key(keyBackupRuns))
		cancel()
		if err != nil {
			return e.mapErr("read backup runs", err)
		}
		runs := map[string]BackupRun{}
		var rev int64
		if len(r.Kvs) > 0 {
			rev = r.Kvs[0].ModRevision
			_ = json.Unmarshal(r.Kvs[0].Value, &runs)
		}
		if err := change(runs); err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		b, err := json.Marshal(runs)
		if err != nil {
			return fmt.Errorf("encode backup runs: %w", err)
		}
		err = e.cas(ctx, op, keyBackupRuns, b, rev)
		if !errors.Is(err, ErrKeyModified) {
			return err
		}
	}
	return fmt.Errorf("%s: %w", op, ErrKeyModified)
}

// setSlot is UpdateBackupSlot's compare and set on the decoded runs.
func setSlot(runs map[string]BackupRun, kind string, prev *BackupSlot, next BackupSlot) error {
	r := runs[kind]
	if !r.Schedule.Same(prev) {
		return ErrKeyModified
	}
	r.Kind, r.Schedule = kind, &next
	runs[kind] = r
	return nil
}

// putRun stores r as the last run of its kind, keeping what belongs to the
// kind: its schedule state, and its last success when r failed.
func putRun(runs map[string]BackupRun, r BackupRun) {
	old := runs[r.Kind]
	r.Schedule = old.Schedule
	switch {
	case !r.OK:
		r.LastSuccess = old.LastSuccess
	case r.LastSuccess.IsZero():
		r.LastSuccess = r.Finished
	}
	runs[r.Kind] = r
}
