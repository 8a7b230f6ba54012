// Package pooler points the local PgBouncer at the right PostgreSQL: it renders
// the databases file pgwarden owns, writes it atomically, and drives PgBouncer
// through its admin console (PAUSE, RELOAD, RESUME, KILL) using the simple
// query protocol, checking SHOW DATABASES after every RELOAD because
// PgBouncer reports success even when loading failed.
//
// The package knows nothing of etcd: it is told where the leader is.
package pooler
