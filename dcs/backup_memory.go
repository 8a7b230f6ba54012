package dcs

import (
	"context"
	"encoding/json"
	"fmt"
)

// AcquireBackupLock implements Store.
func (m *Memory) AcquireBackupLock(ctx context.Context, l BackupLock) (int64, error) {
	b, err := json.Marshal(l)
	if err != nil {
		return 0, err
	}
	unlock, err := m.begin("take backup lock")
	if err != nil {
		return 0, err
	}
	defer unlock()
	lease := m.ourLease()
	if lease == 0 || m.mc.leases[lease] == nil {
		return 0, fmt.Errorf("take backup lock: %w", ErrLeaseExpired)
	}
	if _, ok := m.mc.keys[KeyBackupLock]; ok {
		return 0, fmt.Errorf("take backup lock: %w", ErrKeyModified)
	}
	m.mc.putLocked(KeyBackupLock, b, lease)
	return m.mc.rev, nil
}

// UpdateBackupLock implements Store.
func (m *Memory) UpdateBackupLock(ctx context.Context, l BackupLock, rev int64) (int64, error) {
	b, err := json.Marshal(l)
	if err != nil {
		return 0, err
	}
	unlock, err := m.begin("update backup lock")
	if err != nil {
		return 0, err
	}
	defer unlock()
	k := m.mc.keys[KeyBackupLock]
	if k == nil || k.modRev != rev {
		return 0, fmt.Errorf("update backup lock: %w", ErrKeyModified)
	}
	m.mc.putLocked(KeyBackupLock, b, k.lease)
	return m.mc.rev, nil
}

// ReleaseBackupLock implements Store.
func (m *Memory) ReleaseBackupLock(ctx context.Context, rev int64) error {
	return m.cas("release backup lock", KeyBackupLock, nil, rev)
}

// RecordBackupRun implements Store.
func (m *Memory) RecordBackupRun(ctx context.Context, r BackupRun) error {
	return m.updateBackupRuns("record backup run", func(runs map[string]BackupRun) error {
		PutRun(runs, r)
		return nil
	})
}

// UpdateBackupSlot implements Store.
func (m *Memory) UpdateBackupSlot(ctx context.Context, kind string, prev *BackupSlot, next BackupSlot) error {
	return m.updateBackupRuns("claim backup slot", func(runs map[string]BackupRun) error {
		return SetSlot(runs, kind, prev, next)
	})
}

func (m *Memory) updateBackupRuns(op string, change func(map[string]BackupRun) error) error {
	return m.rewrite(op, KeyBackupRuns, func(cur []byte) ([]byte, error) {
		runs := map[string]BackupRun{}
		if cur != nil {
			_ = json.Unmarshal(cur, &runs)
		}
		if err := change(runs); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		return json.Marshal(runs)
	})
}
