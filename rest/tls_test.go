package rest

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/internal/testlog"
	"github.com/pgwarden/pgwarden/rest/resttest"
)

// TestTLSVerifyClientRejectsClientWithoutCert: a verify_client API refuses
// a client that trusts its CA but has no certificate, and one whose
// certificate another CA signed, and accepts a member's certificate whether
// issued for serverAuth, clientAuth or both.
func TestTLSVerifyClientRejectsClientWithoutCert(t *testing.T) {
	dir := t.TempDir()
	ca := resttest.NewCA(t, dir, "cluster-ca")
	other := resttest.NewCA(t, dir, "other-ca")
	peer := tlsPeer(t, ca, "node2")
	get := func(cert, key string) error {
		tc, err := ClientTLS(ca.File, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		resp, err := c.Get(peer.URL + "/patroni")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := get("", ""); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("client without certificate: %v, want refused (certificate required)", err)
	}
	if c, k := other.Issue(t, "stranger", x509.ExtKeyUsageClientAuth); get(c, k) == nil {
		t.Fatal("client certificate of another CA accepted")
	}
	for name, usage := range map[string][]x509.ExtKeyUsage{
		"server":      {x509.ExtKeyUsageServerAuth},
		"client":      {x509.ExtKeyUsageClientAuth},
		"both":        {x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		"code-signer": {x509.ExtKeyUsageCodeSigning},
	} {
		c, k := ca.Issue(t, name, usage...)
		err := get(c, k)
		if name == "code-signer" {
			if err == nil {
				t.Error("a certificate for neither TLS usage accepted as client certificate")
			}
			continue
		}
		if err != nil {
			t.Errorf("member certificate for %s usage refused: %v", name, err)
		}
	}
}

// TestTLSVerifySelf: a member's own certificate is checked the way peers
// sharing its rest.tls.ca will check it, so a missing or wrong ca is said
// at start rather than seen as unreachable peers.
func TestTLSVerifySelf(t *testing.T) {
	dir := t.TempDir()
	ca := resttest.NewCA(t, dir, "cluster-ca")
	other := resttest.NewCA(t, dir, "other-ca")
	cert, key := ca.Issue(t, "node1")
	for _, tc := range []struct {
		name, ca string
		ok       bool
	}{{"its CA", ca.File, true}, {"another CA", other.File, false}, {"system roots", "", false}} {
		c, err := ClientTLS(tc.ca, cert, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifySelf(c); (err == nil) != tc.ok {
			t.Errorf("%s: VerifySelf = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	if err := VerifySelf(nil); err != nil {
		t.Errorf("no rest.tls: %v", err)
	}
}

// TestSetTLSAndAuthLive: a server started with TLS serves a certificate
// swapped in by SetTLS (SIGHUP after a rotation on disk) to the next
// connection, and requests that change state need the credentials SetAuth
// gave it, not the ones it started with. One started without TLS refuses
// to take it up.
func TestSetTLSAndAuthLive(t *testing.T) {
	dir := t.TempDir()
	ca := resttest.NewCA(t, dir, "cluster-ca")
	cert, key := ca.Issue(t, "node1")
	files := &config.ServerTLS{Cert: cert, Key: key}
	s, err := NewServer(Options{Listen: "127.0.0.1:0", Agent: &fakeAgent{}, TLS: files,
		Auth: &config.Credential{Username: "admin", Password: "old"}}, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := listen(t, s)
	tc, err := ClientTLS(ca.File, "", "")
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		conn, err := tls.Dial("tcp", addr, tc)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := served()
	ca.Issue(t, "node1") // rotated on disk, same names
	next, err := ServerTLS(files)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetTLS(next); err != nil {
		t.Fatal(err)
	}
	if after, want := served(), next.Certificates[0].Leaf.SerialNumber.String(); after != want || after == before {
		t.Fatalf("served serial %s after SetTLS, want the rotated %s (was %s)", after, want, before)
	}

	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	post := func(password string) int {
		req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/reload", nil)
		req.SetBasicAuth("admin", password)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	s.SetAuth(&config.Credential{Username: "admin", Password: "new"})
	if old, cur := post("old"), post("new"); old != http.StatusUnauthorized || cur != http.StatusOK {
		t.Fatalf("after SetAuth: old password %d, new %d; want 401 and 200", old, cur)
	}

	plain, err := NewServer(Options{Agent: &fakeAgent{}}, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.SetTLS(next); err == nil {
		t.Fatal("a plain HTTP server took up TLS")
	}
}
