package config

import (
	"net"
	"path/filepath"
	"time"
)

// PostgresSSLParameters are what postgres.tls sets in the server's
// configuration; an operator value beside it would contradict it.
var PostgresSSLParameters = []string{"ssl", "ssl_cert_file", "ssl_key_file", "ssl_ca_file"}

// SSLMode is the sslmode every connection pgwarden makes or configures to
// PostgreSQL uses under t: verify-full against t.CA when it is set (the
// server's certificate is checked and must name the host dialled), require
// when only a certificate and key are given (encrypted, but the server is
// not authenticated: there is nothing to check it against), and "" when
// t is nil (no TLS configured: the connections stay as they were).
func SSLMode(t *TLS) string {
	switch {
	case t == nil:
		return ""
	case t.CA != "":
		return "verify-full"
	default:
		return "require"
	}
}

// checkPostgresTLS loads what postgres.tls names as PostgreSQL and its
// clients will: PostgreSQL refuses to start with a key others can read, and
// with verify-full every replica, peer probe and pooler checks the
// certificate against the CA and the host it dials.
func checkPostgresTLS(p *Problems, t *TLS, pg Postgres) {
	if t.Cert == "" {
		p.add("postgres.tls.cert", t.Cert, "required with postgres.tls: the certificate the server presents")
	}
	if t.Key == "" {
		p.add("postgres.tls.key", t.Key, "required with postgres.tls")
	}
	if t.CA != "" && filepath.IsAbs(t.CA) {
		if _, err := CertPool(t.CA); err != nil {
			p.add("postgres.tls.ca", t.CA, "%v", err)
		}
	}
	relative := false
	for _, f := range []struct{ key, path string }{{"postgres.tls.cert", t.Cert}, {"postgres.tls.key", t.Key}, {"postgres.tls.ca", t.CA}} {
		if f.path != "" && !filepath.IsAbs(f.path) {
			p.add(f.key, f.path, "must be an absolute path: PostgreSQL reads a relative one from its data directory")
			relative = true
		}
	}
	for _, k := range PostgresSSLParameters {
		if v, ok := pg.Parameters[k]; ok {
			p.add("postgres.parameters."+k, v, "set by postgres.tls; remove it here")
		}
	}
	if t.Cert == "" || t.Key == "" || relative {
		return
	}
	files := certFiles{prefix: "postgres.tls", cert: t.Cert, key: t.Key, ca: t.CA}
	if SSLMode(t) != "verify-full" {
		checkCertKey(p, files, time.Now())
		return
	}
	// Replicas, peers' probes and other nodes' poolers dial connect_address;
	// this node's pooler dials listen: both names must be in the
	// certificate. (A wildcard listen is dialled by no one by that name.)
	host, _, _ := net.SplitHostPort(pg.ConnectAddress)
	names := []verifiedName{{"postgres.connect_address", host}}
	if lh, _, err := net.SplitHostPort(pg.Listen); err == nil && lh != host && !wildcardHost(lh) {
		names = append(names, verifiedName{"postgres.listen", lh})
	}
	checkCertKey(p, files, time.Now(), names...)
}

func wildcardHost(h string) bool {
	if h == "" || h == "*" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsUnspecified()
}
