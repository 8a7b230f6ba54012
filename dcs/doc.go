// Package dcs is the cluster's shared state as the agents see it: one
// lease per agent, the leader key bound to it, member records, the dynamic
// configuration, the initialize race, failover requests, sync state,
// history and the leader's last WAL position, plus a watch that wakes the
// HA loop. It holds the types, the Store interface, the key layout and
// Memory, a state-based in-memory Store for unit tests of the agent; the
// etcd v3 Store is in dcs/etcd, so what reads the cluster (agent, rest)
// does not link the etcd client or gRPC. Both implementations pass the
// same suite (dcs/dcstest).
//
// Writes that decide leadership compare revisions; a lost comparison is a
// typed error (ErrNotLeader, ErrKeyModified, ...).
//
// The package knows nothing of PostgreSQL: WAL positions are plain numbers.
package dcs
