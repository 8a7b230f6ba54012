package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
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
	certPEM, err := os.ReadFile(t.Cert)
	if err != nil {
		p.add("rest.tls.cert", t.Cert, "cannot read it: %v", err)
	}
	keyPEM, kerr := os.ReadFile(t.Key)
	if kerr != nil {
		p.add("rest.tls.key", t.Key, "cannot read it: %v", kerr)
	} else if st, err := os.Stat(t.Key); err == nil {
		if err := PrivateFile(st); err != nil {
			p.add("rest.tls.key", t.Key, "%v", err)
		}
	}
	if err != nil {
		return
	}
	var block *pem.Block
	for rest := certPEM; ; {
		if block, rest = pem.Decode(rest); block == nil || block.Type == "CERTIFICATE" {
			break
		}
	}
	if block == nil {
		p.add("rest.tls.cert", t.Cert, "no PEM certificate in it")
		return
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		p.add("rest.tls.cert", t.Cert, "not a valid certificate: %v", err)
		return
	}
	if kerr != nil {
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		p.add("rest.tls.key", t.Key, "not the key of rest.tls.cert: %v", err)
	}
	// Peers and the CLI dial rest.connect_address and verify the name in
	// it: a certificate that does not name it fails every one of them.
	if host, _, err := net.SplitHostPort(connectAddress); err == nil && host != "" {
		if err := leaf.VerifyHostname(host); err != nil {
			p.add("rest.tls.cert", t.Cert, "not valid for rest.connect_address host %s, which peers and the CLI verify: %v", host, err)
		}
	}
}
