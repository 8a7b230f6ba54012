package harness

import (
	"fmt"
	"strings"
)

// NodeYAML is a test node's pgwarden.yaml: the fields every test cluster
// sets, and raw YAML lines each kind of test adds at fixed places. One
// renderer for the integration clusters and the fault campaign's.
type NodeYAML struct {
	Name, Scope string
	Endpoints   []string
	// EtcdExtra: lines under etcd (tls, username, password_file).
	EtcdExtra string
	RESTPort  int
	// RESTExtra: lines under rest (connect_address, auth, tls).
	RESTExtra                  string
	BinDir, DataDir, SocketDir string
	PGPort                     int
	// PGExtra: lines under postgres after listen (connect_address, tls).
	PGExtra string
	// Superuser and Replication: what follows the username in the flow
	// mapping ("password: x", "password_file: f", or "" for the
	// environment).
	Superuser, Replication string
	MaxConnections         int
	// AfterParams: lines right after the parameters (more parameters,
	// indented four spaces, or postgres keys, indented two).
	AfterParams string
	// Priority, when not nil, is written as the node's priority.
	Priority *int
	LogLevel string
	// Pooler is the whole pooler section ("" for none).
	Pooler               string
	TTL, LoopWait, Retry float64
	// ClusterExtra: lines after the cluster section (more cluster keys,
	// indented, or top-level keys).
	ClusterExtra string
}

// Render writes the file's text.
func (n NodeYAML) Render() string {
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	raw := func(s string) {
		if s != "" {
			b.WriteString(strings.TrimSuffix(s, "\n") + "\n")
		}
	}
	line("name: %s", n.Name)
	line("scope: %s", n.Scope)
	line("namespace: /pgwarden")
	line("etcd:")
	line("  endpoints: [%s]", strings.Join(n.Endpoints, ", "))
	raw(n.EtcdExtra)
	line("rest:")
	line("  listen: 127.0.0.1:%d", n.RESTPort)
	raw(n.RESTExtra)
	line("postgres:")
	line("  bin_dir: %s", n.BinDir)
	line("  data_dir: %s", n.DataDir)
	line("  listen: 127.0.0.1:%d", n.PGPort)
	raw(n.PGExtra)
	line("  superuser: {username: postgres, %s}", n.Superuser)
	line("  replication: {username: replicator, %s}", n.Replication)
	line("  parameters:")
	line("    unix_socket_directories: %s", n.SocketDir)
	line("    shared_buffers: 16MB")
	line(`    fsync: "off"`)
	line(`    max_connections: "%d"`, n.MaxConnections)
	raw(n.AfterParams)
	if n.Priority != nil {
		line("priority: %d", *n.Priority)
	}
	line("log:")
	line("  level: %s", n.LogLevel)
	raw(n.Pooler)
	line("cluster:")
	line("  ttl: %g", n.TTL)
	line("  loop_wait: %g", n.LoopWait)
	line("  retry_timeout: %g", n.Retry)
	raw(n.ClusterExtra)
	return b.String()
}
