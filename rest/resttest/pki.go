// Package resttest makes throwaway certificates for tests of the REST API
// over TLS: a certificate authority, and member certificates it signs for
// 127.0.0.1, written as PEM files the way an operator would hand them to
// rest.tls.
package resttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority of one test.
type CA struct {
	// File is the CA certificate as PEM: what rest.tls.ca and client_ca name.
	File string
	cert *x509.Certificate
	key  crypto.Signer
	dir  string
}

// NewCA makes a CA named name and writes its certificate to dir/name.pem.
func NewCA(t testing.TB, dir, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := template(t, name)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("create CA %s: %v", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{File: filepath.Join(dir, name+".pem"), cert: cert, key: key, dir: dir}
	writePEM(t, ca.File, "CERTIFICATE", der)
	return ca
}

// Issue makes a certificate for 127.0.0.1 named name, signed by the CA, and
// writes it and its key to dir/name.pem and dir/name.key. With no usage it
// is a server certificate only (serverAuth), as operators commonly issue
// them for the members, which then also present it as their client
// certificate.
func (ca *CA) Issue(t testing.TB, name string, usage ...x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	return ca.IssueLeaf(t, name, Leaf{Usage: usage})
}

// Leaf is what a certificate IssueLeaf makes is for; the zero value is
// Issue's (a server certificate for 127.0.0.1, valid for a day).
type Leaf struct {
	Usage []x509.ExtKeyUsage
	// IPs are its IP addresses (127.0.0.1 when empty).
	IPs []net.IP
	// NotAfter ends its validity (a day from now when zero); one in the
	// past makes an expired certificate.
	NotAfter time.Time
}

// IssueLeaf is Issue with the names, usages and validity of l. The key is
// written with mode 0600 by the test's user: PostgreSQL, run by the same
// user in the integration tests, reads it and accepts its mode.
func (ca *CA) IssueLeaf(t testing.TB, name string, l Leaf) (certFile, keyFile string) {
	t.Helper()
	if len(l.Usage) == 0 {
		l.Usage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if len(l.IPs) == 0 {
		l.IPs = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	key := newKey(t)
	tmpl := template(t, name)
	tmpl.IPAddresses = l.IPs
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = l.Usage
	if !l.NotAfter.IsZero() {
		tmpl.NotAfter = l.NotAfter
		if !tmpl.NotBefore.Before(l.NotAfter) {
			tmpl.NotBefore = l.NotAfter.Add(-time.Hour)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatalf("issue %s: %v", name, err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", kb)
	return certFile, keyFile
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// template is a certificate named name, valid from an hour ago for a day,
// with a random serial.
func template(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
