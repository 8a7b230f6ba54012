// Package postgres drives the PostgreSQL server on this host: initdb, start,
// stop, promote, demote/follow, clone, rewind, replication slots, status and
// the configuration files pgwarden manages. SQL lives in one place, in small
// functions over a narrow pgx interface.
//
// The package knows nothing of etcd or HTTP. Outside commands run with
// exec.CommandContext and their output goes to the logger.
package postgres
