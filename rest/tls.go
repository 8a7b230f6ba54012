package rest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/pgwarden/pgwarden/config"
)

// ServerTLS is the API's TLS: this member's certificate, and client
// certificates verified against rest.tls.client_ca (required with
// verify_client, checked when given otherwise). The files are read now:
// Server.SetTLS takes a new one on SIGHUP.
func ServerTLS(t *config.ServerTLS) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("rest.tls: load certificate %s and key %s: %w", t.Cert, t.Key, err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if t.ClientCA == "" {
		return tc, nil
	}
	pool, err := config.CertPool(t.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("rest.tls.client_ca %s: %w", t.ClientCA, err)
	}
	// Named in the certificate request, so a client picks the certificate
	// this CA signed.
	tc.ClientCAs = pool
	// Go's own client verification (VerifyClientCertIfGiven and up) wants
	// the clientAuth usage. Members present their API certificate as
	// their client certificate, as Patroni's do, and those are commonly
	// issued for serverAuth only: verifyClient accepts either usage.
	tc.ClientAuth = tls.RequestClientCert
	if t.VerifyClient {
		tc.ClientAuth = tls.RequireAnyClientCert
	}
	// VerifyConnection also runs on resumed sessions, unlike
	// VerifyPeerCertificate.
	tc.VerifyConnection = func(cs tls.ConnectionState) error { return verifyClient(pool, cs.PeerCertificates) }
	return tc, nil
}

// verifyClient checks a client's chain against the client CAs, for the
// clientAuth or serverAuth usage. No certificate passes: RequireAnyClientCert
// has already refused that when verify_client is set.
func verifyClient(pool *x509.CertPool, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("client certificate %q: %w", chain[0].Subject.CommonName, err)
	}
	return nil
}

// ClientTLS is the TLS of a client of the API (an agent asking its peers,
// the CLI): the API's certificate is verified against the PEM certificates
// in caFile (the system roots when it is ""), never skipped, and certFile
// and keyFile, when set, are presented as the client certificate that a
// verify_client member requires.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := config.CertPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("CA %s: %w", caFile, err)
		}
		tc.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("client certificate %q and key %q go together", certFile, keyFile)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s and key %s: %w", certFile, keyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// PeerTLS is ClientTLS for the agent's peer calls, from this member's
// rest.tls: nil (plain HTTP, system roots for an https peer) when it has
// none.
func PeerTLS(t *config.ServerTLS) (*tls.Config, error) {
	if t == nil {
		return nil, nil
	}
	tc, err := ClientTLS(t.CA, t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("rest.tls: %w", err)
	}
	return tc, nil
}

// VerifySelf checks this member's certificate as its peers will, when they
// share its rest.tls.ca: against tc's roots (the system's when it has
// none). A member whose own certificate fails it is unreadable to such
// peers and to the CLI: most often rest.tls.ca is unset or names another
// CA, or the certificate expired.
func VerifySelf(tc *tls.Config) error {
	if tc == nil || len(tc.Certificates) == 0 || tc.Certificates[0].Leaf == nil {
		return nil
	}
	chain := tc.Certificates[0]
	inter := x509.NewCertPool()
	for _, der := range chain.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	_, err := chain.Leaf.Verify(x509.VerifyOptions{Roots: tc.RootCAs, Intermediates: inter})
	return err
}
