package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/rest/resttest"
)

// TestTLSCLIReachesAPI: the commands that call a member's REST API reach
// an https API that requires client certificates, with the CA and client
// certificate of the file's rest.tls or of --ca/--cert/--key (which
// override it); a wrong CA or a missing client certificate fails with one
// line that says what to set.
func TestTLSCLIReachesAPI(t *testing.T) {
	dir := t.TempDir()
	ca := resttest.NewCA(t, dir, "cluster-ca")
	other := resttest.NewCA(t, dir, "other-ca")
	srvCert, srvKey := ca.Issue(t, "node1")
	cert, key := ca.Issue(t, "node2", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)

	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := config.CertPool(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/switchover" {
			http.Error(w, `{"error":"unexpected request"}`, http.StatusBadRequest)
			return
		}
		io.WriteString(w, `{"message":"switched over"}`)
	}))
	api.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	api.Config.ErrorLog = log.New(io.Discard, "", 0)
	api.StartTLS()
	defer api.Close()

	withTLS := func(t *config.ServerTLS) *config.Config { return &config.Config{REST: config.REST{TLS: t}} }
	flagsOf := func(ca, cert, key string) restFlags { return restFlags{ca: &ca, cert: &cert, key: &key} }
	cases := []struct {
		name  string
		cfg   *config.Config
		flags restFlags
		want  []string // "" = success
	}{
		{"rest.tls of the file", withTLS(&config.ServerTLS{Cert: cert, Key: key, CA: ca.File}), flagsOf("", "", ""), nil},
		{"--ca overrides a wrong rest.tls.ca", withTLS(&config.ServerTLS{Cert: cert, Key: key, CA: other.File}), flagsOf(ca.File, "", ""), nil},
		{"--ca --cert --key without rest.tls", withTLS(nil), flagsOf(ca.File, cert, key), nil},
		{"wrong CA", withTLS(&config.ServerTLS{Cert: cert, Key: key, CA: other.File}), flagsOf("", "", ""),
			[]string{"POST " + api.URL + "/switchover: ", "not trusted", "unknown authority", "rest.tls.ca or --ca"}},
		{"no rest.tls: system roots", withTLS(nil), flagsOf("", "", ""), []string{"not trusted", "--ca"}},
		{"no client certificate", withTLS(nil), flagsOf(ca.File, "", ""), []string{"refused this client", "certificate required", "--cert/--key"}},
		{"--ca missing", withTLS(nil), flagsOf(dir+"/nope.pem", "", ""), []string{"nope.pem", "no such file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := newRESTClient(tc.cfg, tc.flags)
			if err == nil {
				_, _, err = rc.do(context.Background(), http.MethodPost, api.URL+"/switchover", map[string]string{"leader": "node1"})
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("POST over TLS: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("succeeded")
			}
			line := oneLine(err)
			t.Log(line)
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Fatalf("error %q lacks %q", line, w)
				}
			}
			if strings.Count(line, api.URL) > 1 {
				t.Fatalf("error %q repeats the URL", line)
			}
		})
	}
	if _, err := newRESTClient(withTLS(nil), flagsOf("", cert, "")); !errors.Is(err, errUsage) {
		t.Fatalf("--cert without --key: %v, want a usage error", err)
	}
}
