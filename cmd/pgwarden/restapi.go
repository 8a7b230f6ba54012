package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strings"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/rest"
)

// restFlags are the flags of every command that calls a member's REST API:
// they override what the file's rest.tls says.
type restFlags struct{ ca, cert, key *string }

// restFlagsUsage is their part of a command's usage line.
const restFlagsUsage = "[--ca FILE] [--cert FILE --key FILE]"

func addRESTFlags(fs *flag.FlagSet) restFlags {
	return restFlags{
		ca:   fs.String("ca", "", "PEM file of the CA that signed the REST API's certificate (default: rest.tls.ca, else the system roots)"),
		cert: fs.String("cert", "", "PEM client certificate for an API with verify_client (default: rest.tls.cert)"),
		key:  fs.String("key", "", "PEM key of --cert (default: rest.tls.key)"),
	}
}

// restClient calls members' REST APIs with the file's credentials and TLS.
type restClient struct {
	hc   *http.Client
	auth *config.Credential
}

// newRESTClient is the one HTTP client of the commands that call a
// member's REST API. An https API's certificate is verified against
// --ca, else rest.tls.ca, else the system roots; the client certificate is
// --cert/--key, else this node's rest.tls cert and key, as its agent
// presents them to its peers.
func newRESTClient(cfg *config.Config, f restFlags) (*restClient, error) {
	var ca, cert, key string
	if t := cfg.REST.TLS; t != nil {
		ca, cert, key = t.CA, t.Cert, t.Key
	}
	if *f.ca != "" {
		ca = *f.ca
	}
	if (*f.cert == "") != (*f.key == "") {
		return nil, fmt.Errorf("--cert and --key go together: %w", errUsage)
	}
	if *f.cert != "" {
		cert, key = *f.cert, *f.key
	}
	tc, err := rest.ClientTLS(ca, cert, key)
	if err != nil {
		return nil, fmt.Errorf("REST API TLS: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	// No overall timeout: a switchover answers once the new primary
	// accepts writes. The command's context bounds it.
	return &restClient{hc: &http.Client{Transport: tr}, auth: cfg.REST.Auth}, nil
}

// do sends body as JSON and returns the status and body; a status other
// than 200/202 becomes the error.
func (c *restClient) do(ctx context.Context, method, url string, body any) (int, []byte, error) {
	return c.doHeader(ctx, method, url, body, nil)
}

// doHeader is do with extra request headers.
func (c *restClient) doHeader(ctx context.Context, method, url string, body any, hdr http.Header) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	// The agent that acts logs who asked.
	req.Header.Set("X-Pgwarden-Source", cliSource())
	if a := c.auth; a != nil {
		req.SetBasicAuth(a.Username, a.Password)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, url, explainTransport(err))
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		return resp.StatusCode, out, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, apiMessage(out))
	}
	return resp.StatusCode, out, nil
}

// cliSource is "cli USER@HOST", as the agents log it.
func cliSource() string {
	u := os.Getenv("USER")
	if cu, err := user.Current(); err == nil {
		u = cu.Username
	}
	h, _ := os.Hostname()
	return "cli " + u + "@" + h
}

// explainTransport says what to change when the TLS handshake failed; the
// method and URL that *url.Error repeats are dropped (do names them).
func explainTransport(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var unknown x509.UnknownAuthorityError
	var verify *tls.CertificateVerificationError
	var op *net.OpError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("the API's certificate is not trusted (%v): give the CA that signed it in rest.tls.ca or --ca", unknown)
	case errors.As(err, &verify):
		return fmt.Errorf("the API's certificate did not verify: %w", verify.Err)
	case errors.As(err, &op) && op.Op == "remote error":
		// A TLS alert from the server: it refused this client's
		// certificate, or wanted one.
		return fmt.Errorf("the API refused this client (%v): it wants a client certificate signed by its rest.tls.client_ca, from rest.tls.cert/key or --cert/--key", op.Err)
	}
	return err
}

// apiMessage extracts the error text of a JSON error body.
func apiMessage(b []byte) string {
	var v struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &v) == nil {
		if v.Error != "" {
			return v.Error
		}
		if v.Message != "" {
			return v.Message
		}
	}
	return strings.TrimSpace(string(b))
}
