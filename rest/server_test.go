package rest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/internal/testlog"
)

// fakeAgent records the calls that change state.
type fakeAgent struct {
	mu      sync.Mutex
	st      agent.Status
	calls   []string
	err     error
	cfg     []byte
	cfgRev  int64
	cluster *dcs.Cluster
	sched   bool
	// source is who the last reload came from (agent.SourceOf).
	source string
}

func (f *fakeAgent) Status() *agent.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	return &st
}
func (f *fakeAgent) record(c string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
	return f.err
}
func (f *fakeAgent) Switchover(ctx context.Context, r agent.SwitchoverRequest) (bool, error) {
	return !r.ScheduledAt.IsZero(), f.record("switchover " + r.Leader + ">" + r.Candidate)
}
func (f *fakeAgent) CancelSwitchover(ctx context.Context) error { return f.record("cancel") }
func (f *fakeAgent) Failover(ctx context.Context, r agent.FailoverRequest) error {
	return f.record(fmt.Sprintf("failover %s %v", r.Candidate, r.Force))
}
func (f *fakeAgent) Cluster(ctx context.Context) (*dcs.Cluster, error) { return f.cluster, nil }
func (f *fakeAgent) Config(ctx context.Context) ([]byte, int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg, f.cfgRev, nil
}
func (f *fakeAgent) SetConfig(ctx context.Context, raw []byte, rev int64) error {
	if err := f.record("setconfig " + string(raw)); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if rev != f.cfgRev {
		return dcs.ErrKeyModified
	}
	f.cfg, f.cfgRev = raw, rev+1
	return nil
}
func (f *fakeAgent) History(ctx context.Context) ([]dcs.HistoryEntry, error) {
	return []dcs.HistoryEntry{{Timeline: 2, Parent: 1, LSN: 100, Reason: "switchover", NewLeader: "b"},
		{Timeline: 3, LSN: 200, Reason: "failover", NewLeader: "a", Pending: true}}, nil
}
func (f *fakeAgent) Restart(ctx context.Context) error { return f.record("restart") }
func (f *fakeAgent) Reload(ctx context.Context) error {
	f.mu.Lock()
	f.source = agent.SourceOf(ctx)
	f.mu.Unlock()
	return f.record("reload")
}
func (f *fakeAgent) Reinitialize(ctx context.Context) error { return f.record("reinit") }
func (f *fakeAgent) ConfirmFailsafe(leader string, ttl time.Duration) error {
	if leader != "a" {
		return fmt.Errorf("%w: this member's last view names leader %q", agent.ErrFailsafeRefused, "a")
	}
	return f.record("failsafe " + leader)
}

var (
	primaryStatus = agent.Status{Name: "a", Scope: "main", Role: "primary", State: "running", IsLeader: true, Running: true, Answering: true,
		WALPosition: 5000, Timeline: 2, LastLoop: time.Now(), TTL: 10 * time.Second, Tags: map[string]string{"dc": "x"}}
	replicaStatus = agent.Status{Name: "b", Scope: "main", Role: "replica", State: "running", Running: true, Answering: true, InRecovery: true,
		Streaming: true, ReceivedLSN: 4000, ReplayedLSN: 3000, LeaderLSN: 3000 + 20<<10, LastLoop: time.Now(), Tags: map[string]string{"dc": "y"}}
)

func newTestServer(t *testing.T, f *fakeAgent, auth *config.Credential) *httptest.Server {
	t.Helper()
	s, err := NewServer(Options{Agent: f, Auth: auth, Version: "test"}, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, s)
}

// serve runs s's handler on a test server closed with the test.
func serve(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

func do(t *testing.T, ts *httptest.Server, method, path, body string, auth ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(auth) == 2 {
		req.SetBasicAuth(auth[0], auth[1])
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthChecks(t *testing.T) {
	stale := replicaStatus
	stale.LastLoop = time.Now().Add(-time.Hour)
	notStreaming := replicaStatus
	notStreaming.Streaming = false
	noLB := replicaStatus
	noLB.NoLoadBalance = true
	syncRep := replicaStatus
	syncRep.Synchronous = true
	keyOnly := primaryStatus
	keyOnly.InRecovery = true // holds the key but PostgreSQL is not a primary yet
	stopped := agent.Status{Name: "c", State: "stopped"}
	// Its postmaster runs but it does not answer the agent: the agent
	// cannot vouch that it is a primary.
	mutePrimary := primaryStatus
	mutePrimary.Answering, mutePrimary.State = false, "unresponsive"
	cases := []struct {
		name string
		st   agent.Status
		path string
		want int
	}{
		{"primary", primaryStatus, "/primary", 200},
		{"primary aliases", primaryStatus, "/master", 200},
		{"primary aliases", primaryStatus, "/leader", 200},
		{"primary aliases", primaryStatus, "/read-write", 200},
		{"/ is /primary (bare option httpchk)", primaryStatus, "/", 200},
		{"/ on a replica", replicaStatus, "/", 503},
		{"/ on a stopped node", stopped, "/", 503},
		{"key without primary postgres", keyOnly, "/primary", 503},
		{"unresponsive primary is not vouched for", mutePrimary, "/primary", 503},
		{"unresponsive primary is not read-only either", mutePrimary, "/read-only", 503},
		{"unresponsive primary runs", mutePrimary, "/health", 200},
		{"replica on primary", primaryStatus, "/replica", 503},
		{"primary on replica", replicaStatus, "/primary", 503},
		{"replica", replicaStatus, "/replica", 200},
		{"replica within lag", replicaStatus, "/replica?lag=1MB", 200},
		{"replica beyond lag", replicaStatus, "/replica?lag=16kB", 503},
		{"replica lag in bytes", replicaStatus, "/replica?lag=20480", 200},
		{"replica lag just under", replicaStatus, "/replica?lag=20479", 503},
		{"bad lag", replicaStatus, "/replica?lag=lots", 400},
		{"not streaming", notStreaming, "/replica", 503},
		{"noloadbalance", noLB, "/replica", 503},
		{"tag match", replicaStatus, "/replica?tag_dc=y", 200},
		{"tag mismatch", replicaStatus, "/replica?tag_dc=x", 503},
		{"read-only on primary", primaryStatus, "/read-only", 200},
		{"read-only on replica", replicaStatus, "/read-only", 200},
		{"read-only stopped", stopped, "/read-only", 503},
		{"async replica", replicaStatus, "/async", 200},
		{"async on sync", syncRep, "/asynchronous", 503},
		{"sync", syncRep, "/sync", 200},
		{"sync on async", replicaStatus, "/synchronous", 503},
		{"health running", replicaStatus, "/health", 200},
		{"health stopped", stopped, "/health", 503},
		{"liveness fresh", replicaStatus, "/liveness", 200},
		{"liveness stale", stale, "/liveness", 503},
		{"readiness primary", primaryStatus, "/readiness", 200},
		{"readiness replica", replicaStatus, "/readiness", 200},
		{"readiness not streaming", notStreaming, "/readiness", 503},
	}
	for _, c := range cases {
		ts := newTestServer(t, &fakeAgent{st: c.st}, nil)
		for _, m := range []string{"GET", "HEAD", "OPTIONS"} {
			if code, body := do(t, ts, m, c.path, ""); code != c.want {
				t.Errorf("%s: %s %s = %d %s; want %d", c.name, m, c.path, code, body, c.want)
			}
		}
	}
}

func TestStatusJSON(t *testing.T) {
	ts := newTestServer(t, &fakeAgent{st: replicaStatus}, nil)
	for _, path := range []string{"/patroni", "/status"} {
		code, body := do(t, ts, "GET", path, "")
		if code != 200 {
			t.Fatalf("%s = %d", path, code)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatal(err)
		}
		x, _ := v["xlog"].(map[string]any)
		if v["state"] != "running" || v["role"] != "replica" || v["replication_state"] != "streaming" ||
			x["received_location"] != 4000.0 || x["replayed_location"] != 3000.0 || v["patroni"].(map[string]any)["scope"] != "main" {
			t.Fatalf("%s body %s", path, body)
		}
	}
	ts = newTestServer(t, &fakeAgent{st: primaryStatus}, nil)
	_, body := do(t, ts, "GET", "/patroni", "")
	if !strings.Contains(body, `"location": 5000`) || !strings.Contains(body, `"timeline": 2`) {
		t.Fatalf("primary status %s", body)
	}
}

func TestMetrics(t *testing.T) {
	ts := newTestServer(t, &fakeAgent{st: replicaStatus}, nil)
	code, body := do(t, ts, "GET", "/metrics", "")
	for _, want := range []string{`pgwarden_replica{name="b",scope="main"} 1`, `pgwarden_replication_lag_bytes{name="b",scope="main"} 20480`, "pgwarden_lease_renewals_total", "pgwarden_failovers_total", "go_goroutines"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q (code %d)", want, code)
		}
	}
}

func TestWriteEndpoints(t *testing.T) {
	cases := []struct {
		method, path, body string
		err                error
		want               int
		call               string
	}{
		{"POST", "/switchover", `{"leader":"a","candidate":"b"}`, nil, 200, "switchover a>b"},
		{"POST", "/switchover", `{"candidate":"b","scheduled_at":"2030-01-01T00:00:00Z"}`, nil, 202, "switchover >b"},
		{"POST", "/switchover", `{"leader":"a","candidate":"b"}`, agent.ErrPrecondition, 412, "switchover a>b"},
		{"POST", "/switchover", `{"leader":"a"}`, agent.ErrNotCompleted, 503, "switchover a>"},
		{"POST", "/switchover", `{"leader":"a",`, nil, 400, ""},
		{"POST", "/switchover", `{"leader":"a","x":1}`, nil, 400, ""},
		{"POST", "/switchover", `{}`, nil, 400, ""},
		{"POST", "/switchover", `{"leader":"a"} {}`, nil, 400, ""},
		{"POST", "/switchover", `{"candidate":"b","scheduled_at":"tomorrow"}`, nil, 400, ""},
		{"POST", "/switchover", `"a"`, nil, 400, ""},
		{"POST", "/switchover", `{"leader":"` + strings.Repeat("a", maxBody) + `"}`, nil, 413, ""},
		{"DELETE", "/switchover", ``, nil, 200, "cancel"},
		{"DELETE", "/switchover", ``, agent.ErrPrecondition, 412, "cancel"},
		{"POST", "/failover", `{"candidate":"c","force":true}`, nil, 200, "failover c true"},
		{"POST", "/failover", `{"force":true}`, nil, 400, ""},
		{"POST", "/failover", `{"candidate":"c"}`, agent.ErrPrecondition, 412, "failover c false"},
		{"POST", "/restart", ``, nil, 200, "restart"},
		{"POST", "/reload", ``, nil, 200, "reload"},
		{"POST", "/reinitialize", ``, nil, 200, "reinit"},
		{"POST", "/reinitialize", ``, agent.ErrPrecondition, 412, "reinit"},
		{"POST", "/restart", ``, agent.ErrNotCompleted, 503, "restart"},
		{"PUT", "/primary", ``, nil, 405, ""},
	}
	for _, c := range cases {
		f := &fakeAgent{st: primaryStatus, err: c.err}
		ts := newTestServer(t, f, nil)
		code, body := do(t, ts, c.method, c.path, c.body)
		if code != c.want {
			t.Errorf("%s %s %.60s = %d %s; want %d", c.method, c.path, c.body, code, body, c.want)
		}
		got := strings.Join(f.calls, ",")
		if got != c.call {
			t.Errorf("%s %s %.60s: agent calls %q; want %q", c.method, c.path, c.body, got, c.call)
		}
		if code >= 400 && !strings.Contains(body, `"error"`) {
			t.Errorf("%s %s: error body without a reason: %s", c.method, c.path, body)
		}
	}
}

func TestConfigEndpoints(t *testing.T) {
	f := &fakeAgent{st: primaryStatus, cfg: []byte(`{"ttl":10,"loop_wait":1,"parameters":{"work_mem":"4MB"}}`), cfgRev: 7}
	ts := newTestServer(t, f, nil)
	if code, body := do(t, ts, "GET", "/config", ""); code != 200 || !strings.Contains(body, `"ttl": 10`) {
		t.Fatalf("GET /config = %d %s", code, body)
	}
	code, body := do(t, ts, "PATCH", "/config", `{"ttl":20,"loop_wait":null,"parameters":{"max_connections":"300"}}`)
	if code != 200 {
		t.Fatalf("PATCH = %d %s", code, body)
	}
	var got map[string]any
	_ = json.Unmarshal(f.cfg, &got)
	params, _ := got["parameters"].(map[string]any)
	if got["ttl"] != 20.0 || got["loop_wait"] != nil || params["work_mem"] != "4MB" || params["max_connections"] != "300" {
		t.Fatalf("merged config %s", f.cfg)
	}
	if code, _ := do(t, ts, "PATCH", "/config", `{"ttl":`); code != 400 {
		t.Fatalf("bad PATCH = %d", code)
	}
	f.err = dcs.ErrKeyModified
	if code, _ := do(t, ts, "PATCH", "/config", `{"ttl":30}`); code != 409 {
		t.Fatalf("PATCH losing a race = %d; want 409", code)
	}
	f.err = fmt.Errorf("%w: ttl: must be > loop_wait + retry_timeout", agent.ErrBadRequest)
	if code, body := do(t, ts, "PUT", "/config", `{"ttl":1}`); code != 400 || !strings.Contains(body, "ttl") {
		t.Fatalf("PUT invalid = %d %s", code, body)
	}
	f.err = nil
	if code, _ := do(t, ts, "PUT", "/config", `{"ttl":15}`); code != 200 || string(f.cfg) != `{"ttl":15}` {
		t.Fatalf("PUT = %d, config %s", code, f.cfg)
	}
	// If-Match: the revision the client edited; an older one is a 409.
	for _, tc := range []struct {
		rev  string
		want int
	}{{fmt.Sprint(f.cfgRev - 1), 409}, {"soon", 400}, {fmt.Sprint(f.cfgRev), 200}} {
		req, _ := http.NewRequest("PUT", ts.URL+"/config", strings.NewReader(`{"ttl":20}`))
		req.Header.Set("If-Match", tc.rev)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("PUT /config If-Match %s = %d; want %d", tc.rev, resp.StatusCode, tc.want)
		}
	}
}

func TestClusterAndHistory(t *testing.T) {
	f := &fakeAgent{st: primaryStatus, cluster: &dcs.Cluster{
		Leader: &dcs.Leader{Name: "b"},
		Members: []dcs.Member{
			{Name: "a", Role: "replica", State: "running", ConnURL: "postgres://127.0.0.1:5432/postgres", WALPosition: 900},
			{Name: "b", Role: "primary", State: "running", ConnURL: "postgres://127.0.0.1:5433/postgres"},
		},
		Status:   dcs.Status{LSN: 1000},
		Failover: &dcs.Failover{Kind: "switchover", Candidate: "a", ScheduledAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)},
	}}
	ts := newTestServer(t, f, nil)
	code, body := do(t, ts, "GET", "/cluster", "")
	var v struct {
		Scope   string
		Members []clusterMember
		Sched   *scheduled `json:"scheduled_switchover"`
	}
	if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil {
		t.Fatalf("/cluster = %d %s", code, body)
	}
	if v.Scope != "main" || len(v.Members) != 2 || v.Members[0].Name != "b" || v.Members[0].Role != "leader" ||
		v.Members[1].Port != 5432 || v.Members[1].Lag == nil || *v.Members[1].Lag != 100 || v.Sched == nil || v.Sched.At != "2030-01-01T00:00:00Z" {
		t.Fatalf("/cluster body %s", body)
	}
	code, body = do(t, ts, "GET", "/history", "")
	var h [][]any
	if err := json.Unmarshal([]byte(body), &h); code != 200 || err != nil || len(h) != 1 || len(h[0]) != 5 ||
		h[0][0] != 1.0 || h[0][1] != 100.0 || h[0][2] != "switchover" || h[0][4] != "b" {
		t.Fatalf("/history = %d %s; want Patroni's [[timeline, lsn, reason, time, new_leader]]", code, body)
	}
}

func TestAuth(t *testing.T) {
	f := &fakeAgent{st: primaryStatus, cfg: []byte(`{}`)}
	ts := newTestServer(t, f, &config.Credential{Username: "op", Password: "s3cret"})
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/switchover", `{"candidate":"b"}`}, {"DELETE", "/switchover", ""}, {"POST", "/failover", `{"candidate":"b"}`},
		{"PATCH", "/config", `{"ttl":5}`}, {"PUT", "/config", `{"ttl":5}`}, {"POST", "/restart", ""}, {"POST", "/reload", ""}, {"POST", "/reinitialize", ""},
	} {
		for _, cred := range [][]string{nil, {"op", "wrong"}, {"wrong", "s3cret"}, {"", ""}} {
			if code, _ := do(t, ts, r.method, r.path, r.body, cred...); code != 401 {
				t.Errorf("%s %s with %v = %d; want 401", r.method, r.path, cred, code)
			}
		}
	}
	if len(f.calls) != 0 {
		t.Fatalf("unauthenticated requests reached the agent: %v", f.calls)
	}
	if code, _ := do(t, ts, "POST", "/reload", "", "op", "s3cret"); code != 200 || len(f.calls) != 1 {
		t.Fatalf("authenticated reload = %d, calls %v", code, f.calls)
	}
	// Reads stay open.
	for _, p := range []string{"/primary", "/patroni", "/cluster", "/config", "/metrics"} {
		f.cluster = &dcs.Cluster{}
		if code, _ := do(t, ts, "GET", p, ""); code != 200 {
			t.Errorf("GET %s with auth set = %d; want 200", p, code)
		}
	}
}

// TestTLS serves over TLS with a generated certificate, and refuses a
// client without a certificate when verify_client is set.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pgwarden-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)

	if _, err := NewServer(Options{Agent: &fakeAgent{}, TLS: &config.ServerTLS{Cert: filepath.Join(dir, "missing.pem"), Key: keyPath}}, testlog.New(t)); err == nil || !strings.Contains(err.Error(), "rest.tls") {
		t.Fatalf("missing cert accepted: %v", err)
	}
	s, err := NewServer(Options{Listen: "127.0.0.1:0", Agent: &fakeAgent{st: primaryStatus},
		TLS: &config.ServerTLS{Cert: certPath, Key: keyPath, ClientCA: certPath, VerifyClient: true}}, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := listen(t, s)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	cert, _ := tls.LoadX509KeyPair(certPath, keyPath)
	withCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	resp, err := withCert.Get("https://" + addr + "/primary")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("TLS with client cert: %v %v", resp, err)
	}
	resp.Body.Close()
	noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if resp, err := noCert.Get("https://" + addr + "/primary"); err == nil {
		resp.Body.Close()
		t.Fatal("client without certificate accepted with verify_client")
	}
}

func TestParseBytes(t *testing.T) {
	good := map[string]uint64{"0": 0, "1048576": 1 << 20, "16kB": 16 << 10, "16MB": 16 << 20, "1GB": 1 << 30, "2TB": 2 << 40, "10B": 10}
	for in, want := range good {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MB", "-1", "1.5MB", "1XB", "99999999999TB"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
}

// BenchmarkHealthPrimary is the handler's own cost per health request
// (no network): what HAProxy's polling costs the agent.
func BenchmarkHealthPrimary(b *testing.B) {
	st := primaryStatus
	f := &snapshotAgent{fakeAgent: &fakeAgent{}, st: &st}
	s, err := NewServer(Options{Agent: f, Version: "test"}, testlog.New(b))
	if err != nil {
		b.Fatal(err)
	}
	h := s.Handler()
	req := httptest.NewRequest(http.MethodGet, "/primary", nil)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("GET /primary: %d", w.Code)
		}
	}
}

// snapshotAgent returns the same snapshot until the loop would swap it, as
// the agent does.
type snapshotAgent struct {
	*fakeAgent
	st *agent.Status
}

func (a *snapshotAgent) Status() *agent.Status { return a.st }

// TestFailsafe: POST /failsafe is a member's answer to a leader's
// failsafe round: 200 when it confirms, 409 with the reason when not, 400
// without a leader, 401 without the API's credentials.
func TestFailsafe(t *testing.T) {
	f := &fakeAgent{st: replicaStatus}
	ts := newTestServer(t, f, &config.Credential{Username: "op", Password: "s3cret"})
	cases := []struct {
		body string
		auth []string
		code int
		want string
	}{
		{`{"leader":"a"}`, []string{"op", "s3cret"}, 200, "following a"},
		{`{"leader":"x"}`, []string{"op", "s3cret"}, 409, "names leader"},
		{`{}`, []string{"op", "s3cret"}, 400, "name the leader"},
		{`{"leader":"a","extra":1}`, []string{"op", "s3cret"}, 400, "extra"},
		{`{"leader":"a","ttl":-1}`, []string{"op", "s3cret"}, 400, "ttl -1"},
		{`{"leader":"a","ttl":10}`, []string{"op", "s3cret"}, 200, "following a"},
		{`{"leader":"a"}`, nil, 401, "authentication"},
	}
	for _, c := range cases {
		code, body := do(t, ts, "POST", "/failsafe", c.body, c.auth...)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("POST /failsafe %s: %d %s, want %d with %q", c.body, code, body, c.code, c.want)
		}
	}
}

func TestExposureWarning(t *testing.T) {
	for _, tc := range []struct {
		listen    string
		auth, tls bool
		want      string
	}{
		{"127.0.0.1:8008", false, false, ""},
		{"[::1]:8008", false, false, ""},
		{"localhost:8008", false, false, ""},
		{"0.0.0.0:8008", false, false, "no auth"},
		{":8008", false, true, "no auth"},
		{"10.0.0.5:8008", true, false, "plain HTTP"},
		{"10.0.0.5:8008", true, true, ""},
	} {
		got := exposureWarning(tc.listen, tc.auth, tc.tls)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("exposureWarning(%q, auth %v, tls %v) = %q, want it to say %q", tc.listen, tc.auth, tc.tls, got, tc.want)
		}
	}
}

// listen runs s's own listener (Serve) until the test ends and returns
// its address.
func listen(t *testing.T, s *Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	var addr string
	for range 200 {
		if addr = s.Addr(); addr != "" {
			break
		}
		time.Sleep(10 * time.Millisecond) // bounded wait for the listener
	}
	return addr
}
