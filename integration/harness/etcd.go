package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd is a single-member etcd started by a test.
type Etcd struct {
	*Proc
	// Endpoint is host:port of the client listener.
	Endpoint string
	DataDir  string
	// secure is how it was started with TLS and authentication (nil: plain).
	secure *EtcdSecure
	tls    *tls.Config
	out    LockedBuffer
}

// Output is everything etcd printed.
func (e *Etcd) Output() string { return e.out.String() }

// EtcdSecure starts etcd as a production etcd runs: client TLS with
// client certificates required (--cert-file, --key-file,
// --trusted-ca-file, --client-cert-auth) and authentication on, with one
// user whose role may read and write Prefix only.
type EtcdSecure struct {
	// CA signs the client certificates etcd accepts; Cert and Key are
	// etcd's own (serverAuth; clientAuth too, for etcd's gateway, which
	// dials etcd itself with them).
	CA, Cert, Key string
	// ClientCert and ClientKey are what the harness presents (clientAuth),
	// signed by CA.
	ClientCert, ClientKey string
	// User and Password are the cluster's user; its role may read and
	// write Prefix only. RootPassword is root's: etcd enables
	// authentication only once root exists.
	User, Password, RootPassword, Prefix string
}

// StartEtcd starts etcd on free loopback ports and waits until it is healthy.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	return startEtcd(t, nil)
}

// StartEtcdSecure starts etcd with TLS and authentication (see EtcdSecure)
// and waits until it is healthy and its users exist.
func StartEtcdSecure(t testing.TB, s EtcdSecure) *Etcd {
	t.Helper()
	e := startEtcd(t, &s)
	e.enableAuth(t)
	return e
}

// StartEtcdAuth is StartEtcd with authentication on and no TLS (s's
// certificate fields are not used).
func StartEtcdAuth(t testing.TB, s EtcdSecure) *Etcd {
	t.Helper()
	e := startEtcd(t, nil)
	e.secure = &s
	e.enableAuth(t)
	return e
}

func startEtcd(t testing.TB, s *EtcdSecure) *Etcd {
	bin := LookPath(t, "etcd", "etcd-server")
	dir := Dir(t, "etcd")
	client, peer := Port(t), Port(t)
	scheme := "http"
	var extra []string
	e := &Etcd{Endpoint: fmt.Sprintf("127.0.0.1:%d", client), DataDir: dir, secure: s}
	if s != nil {
		scheme = "https"
		extra = []string{"--cert-file", s.Cert, "--key-file", s.Key, "--trusted-ca-file", s.CA, "--client-cert-auth"}
		e.tls = clientTLS(t, s.CA, s.ClientCert, s.ClientKey)
	}
	cu := fmt.Sprintf("%s://127.0.0.1:%d", scheme, client)
	pu := fmt.Sprintf("http://127.0.0.1:%d", peer)
	cmd := exec.Command(bin, append([]string{
		"--name", "test",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", cu, "--advertise-client-urls", cu,
		"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
		"--initial-cluster", "test=" + pu,
		"--log-level", "warn",
	}, extra...)...)
	cmd.Stdout = &e.out
	e.Proc = Start(t, "etcd", cmd)
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: e.tls}}
	WaitFor(t, 20*time.Second, "etcd healthy", func() (bool, error) {
		if e.Exited() {
			return false, fmt.Errorf("etcd exited")
		}
		resp, err := hc.Get(cu + "/health")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Errorf("health %d", resp.StatusCode)
	})
	return e
}

func clientTLS(t testing.TB, ca, cert, key string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{RootCAs: x509.NewCertPool(), MinVersion: tls.VersionTLS12}
	tc.RootCAs.AppendCertsFromPEM(pem)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatalf("etcd client certificate: %v", err)
	}
	tc.Certificates = []tls.Certificate{pair}
	return tc
}

// enableAuth creates root, the cluster's role (readwrite on Prefix only)
// and user, and turns authentication on.
func (e *Etcd) enableAuth(t testing.TB) {
	t.Helper()
	s := e.secure
	cli := e.client(t, "", "")
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	steps := []struct {
		what string
		do   func() error
	}{
		{"add role root", func() error { _, err := cli.RoleAdd(ctx, "root"); return err }},
		{"add user root", func() error { _, err := cli.UserAdd(ctx, "root", s.RootPassword); return err }},
		{"grant root", func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err }},
		{"add role pgwarden", func() error { _, err := cli.RoleAdd(ctx, "pgwarden"); return err }},
		{"grant the prefix", func() error {
			_, err := cli.RoleGrantPermission(ctx, "pgwarden", s.Prefix, clientv3.GetPrefixRangeEnd(s.Prefix),
				clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"add user " + s.User, func() error { _, err := cli.UserAdd(ctx, s.User, s.Password); return err }},
		{"grant " + s.User, func() error { _, err := cli.UserGrantRole(ctx, s.User, "pgwarden"); return err }},
		{"enable auth", func() error { _, err := cli.AuthEnable(ctx); return err }},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("etcd: %s: %v", st.what, err)
		}
	}
}

// RootClient is a client of etcd as root (over TLS with the harness's
// certificate when secure): for a test that reads every key.
func (e *Etcd) RootClient(t testing.TB) *clientv3.Client {
	t.Helper()
	user, pw := "", ""
	if e.secure != nil {
		user, pw = "root", e.secure.RootPassword
	}
	cli := e.client(t, user, pw)
	t.Cleanup(func() { cli.Close() })
	return cli
}

func (e *Etcd) client(t testing.TB, user, pw string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, TLS: e.tls, Username: user, Password: pw,
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	return cli
}

// StopEtcd stops etcd with SIGTERM.
func (e *Etcd) StopEtcd() error { return e.Stop(syscall.SIGTERM, 10*time.Second) }
