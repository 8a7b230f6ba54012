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
