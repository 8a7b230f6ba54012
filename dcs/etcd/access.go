package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// AccessError is a configuration etcd refuses: its TLS files or its
// credentials. The etcd client would retry such a refusal until each
// call's deadline and report a timeout, far from the cause; it is a
// mistake in the file, not an outage, and the agent must not start on it.
type AccessError struct {
	// key is the key of the configuration's etcd section to fix
	// (etcd.tls.ca, etcd.tls.cert, etcd.username/etcd.password).
	key string
	// endpoint is the etcd that refused.
	endpoint string
	err      error
}

func (e *AccessError) Error() string {
	return fmt.Sprintf("%s: etcd at %s: %v", e.key, e.endpoint, e.err)
}

func (e *AccessError) Unwrap() error { return e.err }

// CheckAccess asks etcd once whether this configuration may use it: the
// TLS handshake both ways (does etcd's certificate verify against
// etcd.tls.ca; does etcd accept this client's certificate), then the
// credentials and the role's permissions on the cluster's prefix (read,
// and with write also write: checked in a transaction whose write branch
// cannot run, so nothing is written). A refusal is an *AccessError; an
// etcd that cannot be reached is not an error here (the agent starts,
// fences and serves its API while etcd is down; the loop reports it).
func (e *Store) CheckAccess(ctx context.Context, write bool) error {
	eps, secure, err := normalizeEndpoints(e.cfg.Endpoints)
	if err != nil {
		return err
	}
	tc, err := clientTLS(e.cfg.TLS, secure)
	if err != nil {
		return err
	}
	reached, err := e.probe(ctx, eps, tc)
	if err != nil || reached == "" {
		return err
	}
	cctx, cancel := e.call(ctx)
	defer cancel()
	read := clientv3.OpGet(e.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if write {
		k := e.key("leader")
		// create_revision < 0 never holds: etcd checks the permissions of
		// both branches, and runs only the read.
		_, err = e.cli.Txn(cctx).If(clientv3.Compare(clientv3.CreateRevision(k), "<", 0)).
			Then(clientv3.OpPut(k, "")).Else(read).Commit()
	} else {
		_, err = e.cli.Do(cctx, read)
	}
	return e.accessError(reached, write, err)
}

// probe tries the endpoints in turn (probeTLS) and returns the first that
// answered ("" when none did).
func (e *Store) probe(ctx context.Context, eps []string, tc *tls.Config) (string, error) {
	for _, ep := range eps {
		ok, err := probeTLS(ctx, ep, tc, e.cfg.TLS, e.cfg.RetryTimeout)
		if err != nil || ok {
			return ep, err
		}
	}
	return "", nil
}

// accessError keeps the refusals that are the configuration's fault.
func (e *Store) accessError(ep string, write bool, err error) error {
	if err == nil {
		return nil
	}
	what := "read"
	if write {
		what = "read and write"
	}
	user := e.cfg.Username
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return &AccessError{key: "etcd.username/etcd.password", endpoint: ep,
			err: fmt.Errorf("user %q was refused: authentication failed, invalid user name or password", user)}
	case user == "" && (errors.Is(err, rpctypes.ErrUserEmpty) || errors.Is(err, rpctypes.ErrUserNotFound) ||
		errors.Is(err, rpctypes.ErrPermissionDenied)):
		return &AccessError{key: "etcd.username/etcd.password", endpoint: ep,
			err: fmt.Errorf("etcd requires authentication (%v): set etcd.username and etcd.password (or password_file)", err)}
	case errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrUserNotFound):
		return &AccessError{key: "etcd.username", endpoint: ep,
			err: fmt.Errorf("user %q may not %s %s: grant its role readwrite on that prefix", user, what, e.cfg.Prefix)}
	}
	return nil // an outage or a slow etcd: not the configuration's fault
}

// probeTLS connects to one endpoint and, with TLS, completes a handshake
// and one HTTP request (etcd serves /version to anyone), so that a client
// certificate etcd refuses shows now: under TLS 1.3 the server's verdict
// on it comes only after the client's handshake is over. It reports
// whether the endpoint answered; a refusal is an *AccessError.
func probeTLS(ctx context.Context, ep string, tc *tls.Config, files *TLSFiles, bound time.Duration) (bool, error) {
	dctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", ep)
	if err != nil {
		return false, nil
	}
	defer conn.Close()
	if tc == nil {
		return true, nil
	}
	cfg := tc.Clone()
	cfg.NextProtos = nil // HTTP/1.1 for the probe
	if host, _, err := net.SplitHostPort(ep); err == nil && cfg.ServerName == "" {
		cfg.ServerName = host
	}
	tconn := tls.Client(conn, cfg)
	if d, ok := dctx.Deadline(); ok {
		_ = tconn.SetDeadline(d)
	}
	if err := tconn.HandshakeContext(dctx); err != nil {
		return false, tlsRefusal(ep, files, err)
	}
	if _, err := fmt.Fprintf(tconn, "GET /version HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", ep); err != nil {
		return false, tlsRefusal(ep, files, err)
	}
	if _, err := tconn.Read(make([]byte, 1)); err != nil {
		return false, tlsRefusal(ep, files, err)
	}
	return true, nil
}

// tlsRefusal names the key behind a failed handshake, or nil when the
// failure is not about the configuration (a timeout, a reset).
func tlsRefusal(ep string, files *TLSFiles, err error) error {
	var (
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
		verify   *tls.CertificateVerificationError
		record   tls.RecordHeaderError
		op       *net.OpError
	)
	ca := "the system's roots"
	if files != nil && files.CA != "" {
		ca = files.CA
	}
	switch {
	case errors.As(err, &hostname):
		return &AccessError{key: "etcd.tls.ca", endpoint: ep, err: fmt.Errorf("its certificate does not name the host of the endpoint: %v", hostname)}
	case errors.As(err, &unknown), errors.As(err, &invalid), errors.As(err, &verify):
		return &AccessError{key: "etcd.tls.ca", endpoint: ep, err: fmt.Errorf("its certificate is not trusted by %s: %v", ca, err)}
	case errors.As(err, &record):
		return &AccessError{key: "etcd.tls", endpoint: ep, err: errors.New("it does not speak TLS: remove etcd.tls and use http:// endpoints, or start etcd with TLS")}
	case errors.As(err, &op) && op.Op == "remote error":
		if files == nil || files.Cert == "" {
			return &AccessError{key: "etcd.tls.cert", endpoint: ep, err: fmt.Errorf("it requires a client certificate (%v): set etcd.tls.cert and etcd.tls.key", op.Err)}
		}
		return &AccessError{key: "etcd.tls.cert", endpoint: ep, err: fmt.Errorf("it refused the client certificate %s (%v): issue it from etcd's --trusted-ca-file, for clientAuth", files.Cert, op.Err)}
	case strings.Contains(err.Error(), "tls: "):
		return &AccessError{key: "etcd.tls", endpoint: ep, err: err}
	}
	return nil
}

// clientTLS is the TLS configuration of a client of eps (nil: plain):
// from the files when given, else the system's roots when an endpoint
// says https://.
func clientTLS(files *TLSFiles, secure bool) (*tls.Config, error) {
	if files == nil && !secure {
		return nil, nil
	}
	if files == nil {
		return &tls.Config{MinVersion: tls.VersionTLS12}, nil
	}
	info := transport.TLSInfo{CertFile: files.Cert, KeyFile: files.Key, TrustedCAFile: files.CA}
	tc, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd tls: %w", err)
	}
	return tc, nil
}
