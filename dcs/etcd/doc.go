// Package etcd is the dcs.Store on a real etcd v3 cluster: leadership
// through transactions on revisions and one lease per agent, renewed by
// the HA loop's own keepalive, and a view of the cluster kept by the watch
// (view.go) so an idle agent reads nothing.
package etcd
