package dcs

import "strings"

// Keys under the cluster prefix (<namespace>/<scope>/), as DESIGN.md names them.
const (
	keyLeader     = "leader"
	keyMembers    = "members/"
	keyConfig     = "config"
	keyInitialize = "initialize"
	keyFailover   = "failover"
	keySync       = "sync"
	keyHistory    = "history"
	keyStatus     = "status"
	// keyFailsafe is the member list a failsafe leader must be confirmed
	// by (JSON list of names); written by the leader.
	keyFailsafe = "failsafe"
	// keyBackupLock is the running base backup, bound to its runner's lease.
	keyBackupLock = "backup/lock"
	// keyBackupRuns is the last run of each backup kind (durable).
	keyBackupRuns = "backup/schedule"
)

// quietKey is a key whose writes do not wake watchers (see Store.Watch):
// the leader's status, and the backup keys (a running backup writes its
// progress; no HA decision reads them).
func quietKey(key string) bool {
	return key == keyStatus || key == keyFailsafe || strings.HasPrefix(key, "backup/")
}
