// Package agent is the HA loop of one pgwarden node: observe, decide, act.
//
// Each iteration reads the cluster from the DCS and the local PostgreSQL
// status, hands both to Decide (a pure function of its inputs and the time)
// and lets an executor carry out the one Action it returns. Bootstrap,
// failover, switchover, fencing and rejoin are all decisions of that function.
//
// The package knows nothing of SQL text, etcd keys or HTTP: every side effect
// sits behind a small interface declared here, with in-memory fakes for the
// unit tests and the simulated cluster.
package agent
