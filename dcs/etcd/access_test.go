package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/rest/resttest"
)

// TestProbeTLSNamesTheKey: a handshake refused either way is an
// *AccessError naming the key to fix (a CA that does not sign the server's
// certificate: etcd.tls.ca; a server that wants a client certificate:
// etcd.tls.cert; a server without TLS: etcd.tls), a good one passes, and
// an endpoint nobody listens on is no error at all (an outage, not a
// mistake in the file). The servers are real TLS servers on loopback.
func TestProbeTLSNamesTheKey(t *testing.T) {
	dir := t.TempDir()
	ca := resttest.NewCA(t, dir, "ca")
	other := resttest.NewCA(t, dir, "other")
	srvCert, srvKey := ca.Issue(t, "etcd", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.Issue(t, "agent", x509.ExtKeyUsageClientAuth)
	strangerCert, strangerKey := other.Issue(t, "stranger", x509.ExtKeyUsageClientAuth)
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"etcdserver":"3.4"}`)) })
	tlsServer := httptest.NewUnstartedServer(ok)
	tlsServer.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	tlsServer.StartTLS()
	defer tlsServer.Close()
	plain := httptest.NewServer(ok)
	defer plain.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := l.Addr().String()
	l.Close()

	hostPort := func(s *httptest.Server) string { return s.Listener.Addr().String() }
	cases := []struct {
		name    string
		ep      string
		files   *TLSFiles
		key     string // "" : no error
		reached bool
	}{
		{"good", hostPort(tlsServer), &TLSFiles{CA: ca.File, Cert: cliCert, Key: cliKey}, "", true},
		{"wrong CA", hostPort(tlsServer), &TLSFiles{CA: other.File, Cert: cliCert, Key: cliKey}, "etcd.tls.ca", false},
		{"no client certificate", hostPort(tlsServer), &TLSFiles{CA: ca.File}, "etcd.tls.cert", false},
		{"client certificate of another CA", hostPort(tlsServer), &TLSFiles{CA: ca.File, Cert: strangerCert, Key: strangerKey}, "etcd.tls.cert", false},
		{"server without TLS", hostPort(plain), &TLSFiles{CA: ca.File, Cert: cliCert, Key: cliKey}, "etcd.tls", false},
		{"nobody listening", nobody, &TLSFiles{CA: ca.File, Cert: cliCert, Key: cliKey}, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := clientTLS(tc.files, false)
			if err != nil {
				t.Fatal(err)
			}
			reached, err := probeTLS(context.Background(), tc.ep, cfg, tc.files, 2*time.Second)
			var ae *AccessError
			switch {
			case tc.key == "" && err != nil:
				t.Fatalf("probe: %v", err)
			case tc.key != "" && (!errors.As(err, &ae) || ae.key != tc.key):
				t.Fatalf("probe: %v, want an AccessError naming %s", err, tc.key)
			case reached != tc.reached:
				t.Fatalf("reached %v, want %v", reached, tc.reached)
			}
			if err != nil {
				if strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), tc.key+": etcd at "+tc.ep+": ") {
					t.Fatalf("error %q: want one line starting with the key and the endpoint", err)
				}
				t.Log(err)
			}
		})
	}
}
