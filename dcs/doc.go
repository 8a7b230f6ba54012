// Package dcs keeps the cluster's shared state in etcd v3: one lease per
// agent, the leader key bound to it, member records, the dynamic
// configuration, the initialize race, failover requests, sync state, history
// and the leader's last WAL position, plus a watch that wakes the HA loop.
//
// Writes that decide leadership are etcd transactions comparing revisions;
// a lost comparison is a typed error (ErrNotLeader, ErrKeyModified, ...).
// Memory is a state-based in-memory implementation with the same behaviour,
// checked by the same test suite, for unit tests of the agent.
//
// The package knows nothing of PostgreSQL: WAL positions are plain numbers.
package dcs
