package rest

import (
	"bytes"
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/internal/testlog"
	"github.com/pgwarden/pgwarden/rest/resttest"
	"github.com/pgwarden/pgwarden/wal"
)

func TestPeerClientFetch(t *testing.T) {
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"state":"running","role":"primary","xlog":{"location":500}}`))
	}))
	defer primary.Close()
	replica := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503) // a health-style code must not hide the body
		w.Write([]byte(`{"state":"running","role":"replica","xlog":{"received_location":400,"replayed_location":390}}`))
	}))
	defer replica.Close()
	stopped := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"state":"stopped","role":"replica","xlog":{"replayed_location":999}}`))
	}))
	defer stopped.Close()
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer hang.Close()

	pc := NewPeerClient("me", 300*time.Millisecond, nil, testlog.New(t))
	ms := []dcs.Member{
		{Name: "me", APIURL: "http://127.0.0.1:1"},
		{Name: "p", APIURL: primary.URL, Priority: 100},
		{Name: "r", APIURL: replica.URL + "/", Priority: 50, Tags: map[string]string{"nofailover": "true"}},
		{Name: "s", APIURL: stopped.URL},
		{Name: "h", APIURL: hang.URL},
		{Name: "gone", APIURL: "http://127.0.0.1:1"},
	}
	start := time.Now()
	got := pc.Fetch(context.Background(), ms)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("fetch took %s: peers not asked in parallel or timeout ignored", d)
	}
	if len(got) != 5 {
		t.Fatalf("got %d peers, want 5 (self skipped): %+v", len(got), got)
	}
	want := map[string]struct {
		reach, primary bool
		wal            wal.LSN
		nofail         bool
	}{
		"p":    {true, true, 500, false},
		"r":    {true, false, 400, true},
		"s":    {true, false, 0, false},
		"h":    {false, false, 0, false},
		"gone": {false, false, 0, false},
	}
	for _, p := range got {
		w := want[p.Name]
		if p.Reachable != w.reach || p.Primary != w.primary || p.WAL != w.wal || p.NoFailover != w.nofail {
			t.Errorf("peer %s = %+v, want %+v", p.Name, p, w)
		}
	}
}

// tlsPeer is a member's API over TLS as rest.tls configures it: its
// certificate (serverAuth only, as operators commonly issue them) and
// client certificates required and verified against the cluster's CA.
func tlsPeer(t *testing.T, ca *resttest.CA, name string) *httptest.Server {
	t.Helper()
	cert, key := ca.Issue(t, name)
	tc, err := ServerTLS(&config.ServerTLS{Cert: cert, Key: key, ClientCA: ca.File, VerifyClient: true})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"state":"running","role":"replica","xlog":{"received_location":400,"replayed_location":390}}`))
	}))
	ts.TLS = tc
	// Handshake failures are the point here, not noise for the log.
	ts.Config.ErrorLog = testlog.New(t).StandardLogger(nil)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

// lockedBuffer is a log sink written from the fetch goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestTLSPeersReachable: with rest.tls on, a member reads a verify_client
// peer's /patroni when it trusts rest.tls.ca and presents its own member
// certificate (issued for serverAuth only) as client certificate; with a
// wrong CA, no client certificate, one from another CA, or no rest.tls at
// all (system roots, never skipped verification) the peer is unreachable
// and the log says why, once.
func TestTLSPeersReachable(t *testing.T) {
	dir := t.TempDir()
	ca := resttest.NewCA(t, dir, "cluster-ca")
	other := resttest.NewCA(t, dir, "other-ca")
	peer := tlsPeer(t, ca, "node2")
	cert, key := ca.Issue(t, "node1")
	strangerCert, strangerKey := other.Issue(t, "stranger", x509.ExtKeyUsageClientAuth)

	cases := []struct {
		name      string
		tls       *config.ServerTLS
		reachable bool
		log       string
	}{
		{"right CA and member certificate", &config.ServerTLS{Cert: cert, Key: key, CA: ca.File}, true, ""},
		{"wrong CA", &config.ServerTLS{Cert: cert, Key: key, CA: other.File}, false, "certificate signed by unknown authority"},
		{"no rest.tls: system roots", nil, false, "certificate signed by unknown authority"},
		{"client certificate of another CA", &config.ServerTLS{Cert: strangerCert, Key: strangerKey, CA: ca.File}, false, "peer unreachable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ptls, err := PeerTLS(tc.tls)
			if err != nil {
				t.Fatal(err)
			}
			var logs lockedBuffer
			pc := NewPeerClient("node1", 2*time.Second, ptls, hclog.New(&hclog.LoggerOptions{Output: &logs}))
			ms := []dcs.Member{{Name: "node1", APIURL: "https://127.0.0.1:1"}, {Name: "node2", APIURL: peer.URL}}
			for range 3 {
				got := pc.Fetch(context.Background(), ms)
				if len(got) != 1 || got[0].Reachable != tc.reachable {
					t.Fatalf("peers = %+v, want node2 reachable=%v", got, tc.reachable)
				}
				if tc.reachable && (got[0].WAL != 400 || !got[0].Running) {
					t.Fatalf("peer = %+v, want its WAL 400 read over TLS", got[0])
				}
			}
			out := logs.String()
			if tc.log != "" && (!strings.Contains(out, tc.log) || strings.Count(out, "peer unreachable") != 1) {
				t.Fatalf("log %q: want one 'peer unreachable' line saying %q", out, tc.log)
			}
			if tc.log == "" && out != "" {
				t.Fatalf("unexpected log: %s", out)
			}
		})
	}
}
