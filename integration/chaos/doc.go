// Package chaos is pgwarden's fault campaign: a real cluster (three etcd
// members, three agents with PostgreSQL 15 and their watchdogs, a
// PgBouncer) whose every agent and replication link runs through a
// toxiproxy proxy, a seeded schedule of faults (nemeses) with their heals,
// writers that record every acknowledgement, and a checker that reads the
// record afterwards (check.go). `make chaos` runs it at length; `make test`
// runs a short campaign with a fixed seed.
package chaos
