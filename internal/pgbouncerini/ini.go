// Package pgbouncerini renders the pgbouncer.ini of a PgBouncer that
// pgwarden drives, in one place for the integration harness and the demo
// (the example file operators copy is checked against it).
package pgbouncerini

import (
	"fmt"
	"strings"
)

// File is a pgbouncer.ini for a PgBouncer that pgwarden drives, with the
// settings the PgBouncer facts call for: transaction pooling (PAUSE ends
// with the in-flight transactions), a failed server login retried after
// 1 s rather than 15, clients that wait through a switchover, and the
// %include of the agent's databases file as the last line (lines after an
// included file that starts with [databases] would be database entries).
// The integration harness and the demo write it; examples/pgbouncer.ini
// holds every line it renders (TestExampleIniHoldsRender).
type File struct {
	ListenPort int
	// SocketDir is unix_socket_dir: the nodes' unix_socket_directories,
	// so local clients find PostgreSQL and PgBouncer in one directory.
	SocketDir string
	// AuthType is trust in tests and the demo, scram-sha-256 in the example.
	AuthType, AuthFile string
	// LogFile, when set, is where PgBouncer logs (else to stderr).
	LogFile       string
	DatabasesFile string
	// ServerTLSMode and ServerTLSCAFile, set when the nodes have
	// postgres.tls (their pg_hba then takes TCP only over TLS), make
	// PgBouncer's server connections TLS: config.SSLMode and the CA.
	// PgBouncer 1.18 has no per-database TLS, so it is here, not in the
	// databases file the agent writes (a second [pgbouncer] section there
	// would reset every setting before it).
	ServerTLSMode, ServerTLSCAFile string
}

// Render is the file's text.
func (i File) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir = %s\n", i.ListenPort, i.SocketDir)
	fmt.Fprintf(&b, "auth_type = %s\nauth_file = %s\nadmin_users = pgbouncer\n", i.AuthType, i.AuthFile)
	b.WriteString("pool_mode = transaction\nserver_login_retry = 1\nquery_wait_timeout = 60\nignore_startup_parameters = extra_float_digits\n")
	if i.ServerTLSMode != "" {
		fmt.Fprintf(&b, "server_tls_sslmode = %s\n", i.ServerTLSMode)
	}
	if i.ServerTLSCAFile != "" {
		fmt.Fprintf(&b, "server_tls_ca_file = %s\n", i.ServerTLSCAFile)
	}
	if i.LogFile != "" {
		fmt.Fprintf(&b, "logfile = %s\n", i.LogFile)
	}
	fmt.Fprintf(&b, "; the file pgwarden manages must be the last line\n%%include %s\n", i.DatabasesFile)
	return b.String()
}
