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
	unlock, err := m.begin("record backup run")
	if err != nil {
		return err
	}
	defer unlock()
	runs := map[string]BackupRun{}
	if k := m.mc.keys[KeyBackupRuns]; k != nil {
		_ = json.Unmarshal(k.value, &runs)
	}
	runs[r.Kind] = r
	b, err := json.Marshal(runs)
	if err != nil {
		return err
	}
	m.mc.putLocked(KeyBackupRuns, b, 0)
	return nil
}
