package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// CertPool reads the PEM certificates in path (a rest.tls.ca or client_ca
// file). A file with no certificate in it is an error: an empty pool would
// trust nothing, and every handshake would fail far from the cause. The
// errors do not repeat the path: the caller names it with its key.
func CertPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if pe := (*os.PathError)(nil); errors.As(err, &pe) {
		return nil, fmt.Errorf("cannot read it: %w", pe.Err)
	}
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("no PEM certificate in it")
	}
	return pool, nil
}

// checkRESTTLS loads every file rest.tls names as the server and the peer
// client will, so a missing file, bad PEM or a key of another certificate
// is refused at start instead of surfacing as peers that never answer.
func checkRESTTLS(p *Problems, t *ServerTLS, connectAddress string) {
	if t.Cert == "" {
		p.add("rest.tls.cert", t.Cert, "required with rest.tls: the certificate this member serves and presents to its peers")
	}
	if t.Key == "" {
		p.add("rest.tls.key", t.Key, "required with rest.tls")
	}
	if t.Cert != "" && t.Key != "" {
		checkKeyPair(p, t, connectAddress)
	}
	for _, f := range []struct{ key, path string }{{"rest.tls.ca", t.CA}, {"rest.tls.client_ca", t.ClientCA}} {
		if f.path == "" {
			continue
		}
		if _, err := CertPool(f.path); err != nil {
			p.add(f.key, f.path, "%v", err)
		}
	}
	if t.VerifyClient && t.ClientCA == "" {
		p.add("rest.tls.client_ca", t.ClientCA, "required with verify_client: the CA that signs the client certificates of members and operators")
	}
}

func checkKeyPair(p *Problems, t *ServerTLS, connectAddress string) {
	// Peers and the CLI dial rest.connect_address and verify the name in
	// it: a certificate that does not name it fails every one of them.
	host, _, err := net.SplitHostPort(connectAddress)
	if err != nil {
		host = ""
	}
	checkCertKey(p, certFiles{prefix: "rest.tls", cert: t.Cert, key: t.Key, ca: t.CA}, time.Now(), verifiedName{"rest.connect_address", host})
}
