// Package integration holds end-to-end tests against real etcd, PostgreSQL,
// PgBouncer and HAProxy processes started by the tests on loopback ports in
// temporary directories, and stopped by PID.
package integration
