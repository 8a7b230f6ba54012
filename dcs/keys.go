package dcs

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
)

// quietKey is a key whose writes do not wake watchers (see Store.Watch).
func quietKey(key string) bool { return key == keyStatus }
