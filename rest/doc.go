// Package rest serves pgwarden's HTTP API: Patroni-compatible health checks
// for load balancers, node and cluster status, dynamic configuration,
// switchover/failover requests and Prometheus metrics.
//
// Health checks answer from an atomically swapped snapshot of agent state:
// no PostgreSQL query and no etcd call per request. Handlers return
// (value, error) through one wrapper that maps typed errors to status codes.
//
// It is also the API's client side: PeerClient reads other members'
// /patroni, and ClientTLS is the TLS of every caller (peers, the CLI):
// the API's certificate verified against rest.tls.ca, never skipped, and
// the member's own certificate presented as its client certificate, which
// the server accepts for verify_client.
package rest
