// Package rest serves pgwarden's HTTP API: Patroni-compatible health checks
// for load balancers, node and cluster status, dynamic configuration,
// switchover/failover requests and Prometheus metrics.
//
// Health checks answer from an atomically swapped snapshot of agent state:
// no PostgreSQL query and no etcd call per request. Handlers return
// (value, error) through one wrapper that maps typed errors to status codes.
package rest
