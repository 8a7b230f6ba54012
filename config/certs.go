package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"time"
)

// certFiles are a certificate, its key and the CA it must chain to, named
// by the config keys that hold them (prefix.cert, prefix.key, prefix.ca).
type certFiles struct {
	prefix        string
	cert, key, ca string
}

// checkCertKey loads the files the way a TLS server and its clients will,
// so that what would only fail at the first handshake, far from its cause,
// is refused at start: an unreadable file, no PEM certificate, a key of
// another certificate, a key others can read, a certificate outside its
// validity at now, one the CA did not sign, or one not valid for the names
// clients verify.
func checkCertKey(p *Problems, f certFiles, now time.Time, names ...verifiedName) {
	certKey, keyKey, caKey := f.prefix+".cert", f.prefix+".key", f.prefix+".ca"
	certPEM, err := os.ReadFile(f.cert)
	if err != nil {
		p.add(certKey, f.cert, "cannot read it: %v", err)
	}
	keyPEM, kerr := os.ReadFile(f.key)
	if kerr != nil {
		p.add(keyKey, f.key, "cannot read it: %v", kerr)
	} else if rule := keyModeRule(f.key); rule != "" {
		p.add(keyKey, f.key, "%s", rule)
	}
	if err != nil {
		return
	}
	var leaf *x509.Certificate
	inter := x509.NewCertPool()
	for rest := certPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			p.add(certKey, f.cert, "not a valid certificate: %v", err)
			return
		}
		if leaf == nil {
			leaf = c
		} else {
			inter.AddCert(c)
		}
	}
	if leaf == nil {
		p.add(certKey, f.cert, "no PEM certificate in it")
		return
	}
	if kerr == nil {
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			p.add(keyKey, f.key, "not the key of %s: %v", certKey, err)
		}
	}
	switch {
	case now.After(leaf.NotAfter):
		p.add(certKey, f.cert, "expired on %s", leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		p.add(certKey, f.cert, "not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if f.ca != "" {
		if roots, err := CertPool(f.ca); err == nil {
			// Only the signature chain: the usages are the server's and
			// the clients' business.
			// An expired leaf is said above, not again here.
			at := now
			if at.After(leaf.NotAfter) || at.Before(leaf.NotBefore) {
				at = leaf.NotBefore
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
			if _, err := leaf.Verify(opts); err != nil {
				p.add(certKey, f.cert, "not signed by %s %s: %v", caKey, f.ca, err)
			}
		}
	}
	for _, n := range names {
		if err := leaf.VerifyHostname(n.host); n.host != "" && err != nil {
			p.add(certKey, f.cert, "not valid for %s host %s, which clients verify: %v", n.key, n.host, err)
		}
	}
}

// verifiedName is a host clients dial and verify the certificate against,
// with the config key it comes from.
type verifiedName struct{ key, host string }

// keyModeRule applies PrivateFile (PostgreSQL's rule for its own key file)
// to a private key file ("" when it passes or cannot be read: reading it
// is checked on its own).
func keyModeRule(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	if err := PrivateFile(fi); err != nil {
		return err.Error()
	}
	return ""
}
