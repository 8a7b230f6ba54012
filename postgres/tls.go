package postgres

import (
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// TLS is the server's certificate and what every connection to a server
// of the cluster checks.
type TLS struct {
	// CertFile, KeyFile and CAFile become ssl_cert_file, ssl_key_file and
	// ssl_ca_file (absolute paths: PostgreSQL reads relative ones from the
	// data directory).
	CertFile, KeyFile, CAFile string
	// SSLMode is what clients use: verify-full (against CAFile) or require.
	SSLMode string
	// ServerName is the name this node's connections to itself verify:
	// they dial Listen, which may be a wildcard address no certificate
	// names, so they check the connect_address host peers check.
	ServerName string
}

// Keywords are the libpq keywords of a connection to a server of the
// cluster: sslmode=disable without TLS (the agent's own connections never
// negotiated it), and with TLS the mode and the CA it verifies against.
func (t *TLS) Keywords() string {
	if t == nil {
		return "sslmode=disable"
	}
	kw := "sslmode=" + t.SSLMode
	if t.CAFile != "" {
		kw += " sslrootcert=" + conninfoQuote(t.CAFile)
	}
	return kw
}

// env is Keywords for libpq programs (pg_basebackup, pg_rewind); none
// without TLS, where they keep libpq's default (prefer).
func (t *TLS) env() []string {
	if t == nil {
		return nil
	}
	env := []string{"PGSSLMODE=" + t.SSLMode}
	if t.CAFile != "" {
		env = append(env, "PGSSLROOTCERT="+t.CAFile)
	}
	return env
}

// conf is the server's ssl settings for pgwarden.conf.
func (t *TLS) conf() string {
	if t == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("ssl = on\n")
	b.WriteString("ssl_cert_file = " + confQuote(t.CertFile) + "\n")
	b.WriteString("ssl_key_file = " + confQuote(t.KeyFile) + "\n")
	if t.CAFile != "" {
		b.WriteString("ssl_ca_file = " + confQuote(t.CAFile) + "\n")
	}
	return b.String()
}

// verifySelf makes a connection to this node's Listen check ServerName.
func (t *TLS) verifySelf(c *pgconn.Config) {
	if t == nil || t.ServerName == "" || c.TLSConfig == nil || c.TLSConfig.InsecureSkipVerify {
		return
	}
	c.TLSConfig.ServerName = t.ServerName
}
