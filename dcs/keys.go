package dcs

import "strings"

// Keys under the cluster prefix (<namespace>/<scope>/), as DESIGN.md names them.
const (
	KeyLeader     = "leader"
	KeyMembers    = "members/"
	KeyConfig     = "config"
	KeyInitialize = "initialize"
	KeyFailover   = "failover"
	KeySync       = "sync"
	KeyHistory    = "history"
	KeyStatus     = "status"
	// KeyFailsafe is the member list a failsafe leader must be confirmed
	// by (JSON list of names); written by the leader.
	KeyFailsafe = "failsafe"
	// KeyBackupLock is the running base backup, bound to its runner's lease.
	KeyBackupLock = "backup/lock"
	// KeyBackupRuns is the last run of each backup kind (durable).
	KeyBackupRuns = "backup/schedule"
)

// QuietKey is a key whose writes do not wake watchers (see Store.Watch):
// the leader's status, and the backup keys (a running backup writes its
// progress; no HA decision reads them).
func QuietKey(key string) bool {
	return key == KeyStatus || key == KeyFailsafe || strings.HasPrefix(key, "backup/")
}
