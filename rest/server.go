package rest

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
)

// Agent is what the API needs of the HA agent (*agent.Agent).
type Agent interface {
	Status() *agent.Status
	Switchover(ctx context.Context, r agent.SwitchoverRequest) (bool, error)
	CancelSwitchover(ctx context.Context) error
	Failover(ctx context.Context, r agent.FailoverRequest) error
	Cluster(ctx context.Context) (*dcs.Cluster, error)
	Config(ctx context.Context) ([]byte, int64, error)
	SetConfig(ctx context.Context, raw []byte, prevRev int64) error
	History(ctx context.Context) ([]dcs.HistoryEntry, error)
	Restart(ctx context.Context) error
	Reload(ctx context.Context) error
	Reinitialize(ctx context.Context) error
	// ConfirmFailsafe answers a leader's failsafe round (agent/failsafe.go).
	ConfirmFailsafe(leader string, ttl time.Duration) error
}

// Options configure the server.
type Options struct {
	Listen  string
	Agent   Agent
	Auth    *config.Credential
	TLS     *config.ServerTLS
	Version string
	// Backup is this node's backups (nil: none configured).
	Backup Backups
	// MetricsCompat "patroni" adds the patroni_* series to /metrics.
	MetricsCompat string
}

// maxBody bounds request bodies: every valid one is tiny.
const maxBody = 64 << 10

// Server is the REST API of one node.
type Server struct {
	o       Options
	log     hclog.Logger
	handler http.Handler
	// tls is what the listener serves with; each handshake takes the
	// certificates last loaded from tlsNow, which SIGHUP swaps.
	tls     *tls.Config
	tlsNow  atomic.Pointer[tls.Config]
	auth    atomic.Pointer[config.Credential]
	metrics http.Handler

	mu   sync.Mutex
	addr string

	encoded atomic.Pointer[encodedStatus]
	// restarts is the scheduled restart of this node's PostgreSQL.
	restarts *restartSchedule
	// closing ends the status page's event streams at shutdown (Shutdown
	// waits for requests, and a stream never ends by itself).
	closing     chan struct{}
	closingOnce sync.Once
}

// NewServer checks the options (TLS files are loaded now, so a bad path is
// reported at start) and builds the routes.
func NewServer(o Options, log hclog.Logger) (*Server, error) {
	if o.Agent == nil {
		return nil, errors.New("rest: no agent")
	}
	s := &Server{o: o, log: log, closing: make(chan struct{})}
	s.restarts = newRestartSchedule(o.Agent, log.Named("restart"))
	s.auth.Store(o.Auth)
	if o.TLS != nil {
		tc, err := ServerTLS(o.TLS)
		if err != nil {
			return nil, err
		}
		s.tlsNow.Store(tc)
		s.tls = &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.tlsNow.Load(), nil
		}}
	}
	var extra []prometheus.Collector
	if o.Backup != nil {
		extra = append(extra, newBackupCollector(o.Agent, o.Backup))
	}
	switch o.MetricsCompat {
	case "":
	case "patroni":
		extra = append(extra, newPatroniCollector(o.Agent, o.Version))
	default:
		return nil, fmt.Errorf("rest: metrics_compat %q: must be \"patroni\" or empty", o.MetricsCompat)
	}
	s.metrics = newMetrics(o.Agent, extra...)
	s.handler = s.routes()
	if w := exposureWarning(o.Listen, o.Auth != nil, o.TLS != nil); w != "" {
		log.Warn(w, "listen", o.Listen)
	}
	return s, nil
}

// exposureWarning is what an operator should hear at start about a REST
// API reachable beyond this host ("" when nothing): with no auth anyone
// who reaches it can switch over, pause or fail over the cluster; basic
// auth over plain HTTP sends the password in the clear.
func exposureWarning(listen string, auth, tls bool) string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = listen
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return ""
	}
	switch {
	case !auth:
		return "the REST API listens beyond this host with no auth: anyone who reaches it can switch over, pause or fail over the cluster (set rest.auth)"
	case !tls:
		return "the REST API's basic auth goes over plain HTTP beyond this host: the password travels in the clear (set rest.tls)"
	}
	return ""
}

// SetAuth replaces the credentials that requests changing state must carry
// (nil: none), from the next request on.
func (s *Server) SetAuth(a *config.Credential) {
	s.auth.Store(a)
	if w := exposureWarning(s.o.Listen, a != nil, s.o.TLS != nil); w != "" {
		s.log.Warn(w, "listen", s.o.Listen)
	}
}

// SetTLS makes new connections use tc (from ServerTLS: a certificate
// rotated on disk, another client CA); established ones keep theirs. An API
// started without TLS cannot take it up: its listener speaks plain HTTP.
func (s *Server) SetTLS(tc *tls.Config) error {
	if s.tls == nil {
		return errors.New("rest.tls: the API was started without TLS")
	}
	s.tlsNow.Store(tc)
	return nil
}

// Certificate is the certificate new connections are served (nil without
// TLS).
func (s *Server) Certificate() *x509.Certificate {
	if tc := s.tlsNow.Load(); tc != nil && len(tc.Certificates) > 0 {
		return tc.Certificates[0].Leaf
	}
	return nil
}

// Handler is the API's http.Handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// Addr is the address the server listens on once Serve has started.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Serve listens on Options.Listen until ctx ends, then shuts down
// gracefully (in-flight requests get a few seconds).
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.o.Listen)
	if err != nil {
		return fmt.Errorf("rest: listen on %s: %w", s.o.Listen, err)
	}
	s.mu.Lock()
	s.addr = ln.Addr().String()
	s.mu.Unlock()
	srv := &http.Server{
		Handler: s.handler,
		// Health checkers and curl send small requests at once: slow or
		// silent clients are cut off instead of holding connections.
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// A switchover answers only once the new primary accepts writes.
		WriteTimeout:   90 * time.Second,
		IdleTimeout:    60 * time.Second,
		MaxHeaderBytes: 16 << 10,
		TLSConfig:      s.tls,
		ErrorLog:       s.log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
	errc := make(chan error, 1)
	go func() {
		if s.tls != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("rest: %w", err)
	case <-ctx.Done():
	}
	s.closingOnce.Do(func() { close(s.closing) })
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

// healthPaths are answered for GET, HEAD and OPTIONS.
var healthPaths = map[string]check{
	"/primary": checkPrimary, "/leader": checkPrimary, "/master": checkPrimary, "/read-write": checkPrimary,
	"/replica": checkReplica, "/read-only": checkReadOnly,
	"/synchronous": checkSync, "/sync": checkSync,
	"/asynchronous": checkAsync, "/async": checkAsync,
	"/health": checkHealth, "/liveness": checkLiveness, "/readiness": checkReadiness,
	// A bare `option httpchk` asks for "/": it must find the primary, as
	// Patroni's does, or writes would go to replicas.
	"/": checkPrimary,
}

func (s *Server) routes() http.Handler {
	r := mux.NewRouter()
	health := make(map[string]http.Handler, len(healthPaths))
	for path, c := range healthPaths {
		health[path] = s.health(c)
		r.Handle(path, health[path]).Methods(http.MethodGet, http.MethodHead, http.MethodOptions)
	}
	r.HandleFunc("/patroni", s.statusHandler).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/status", s.statusHandler).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/metrics", s.metrics).Methods(http.MethodGet)
	r.Handle("/cluster", s.api(s.getCluster)).Methods(http.MethodGet)
	r.Handle("/history", s.api(s.getHistory)).Methods(http.MethodGet)
	r.Handle("/config", s.api(s.getConfig)).Methods(http.MethodGet)
	r.Handle("/config", s.write(s.patchConfig)).Methods(http.MethodPatch)
	r.Handle("/config", s.write(s.putConfig)).Methods(http.MethodPut)
	r.Handle("/switchover", s.write(s.postSwitchover)).Methods(http.MethodPost)
	r.Handle("/switchover", s.write(s.deleteSwitchover)).Methods(http.MethodDelete)
	r.Handle("/failover", s.write(s.postFailover)).Methods(http.MethodPost)
	r.Handle("/failsafe", s.write(s.postFailsafe)).Methods(http.MethodPost)
	r.Handle("/restart", s.write(s.postRestart)).Methods(http.MethodPost)
	r.Handle("/restart", s.write(s.deleteRestart)).Methods(http.MethodDelete)
	r.Handle("/reload", s.write(s.simple("reload", s.o.Agent.Reload))).Methods(http.MethodPost)
	r.Handle("/reinitialize", s.write(s.simple("reinitialize", s.o.Agent.Reinitialize))).Methods(http.MethodPost)
	r.Handle("/backups", s.api(s.getBackups)).Methods(http.MethodGet)
	r.HandleFunc("/ui", s.getUI).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/ui/events", s.getUIEvents).Methods(http.MethodGet)
	r.Handle("/backup", s.toLeader(s.write(s.postBackup))).Methods(http.MethodPost)
	r.Handle("/drill", noWriteDeadline(s.write(s.postDrill))).Methods(http.MethodPost)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errBody{Error: "no such path: " + r.URL.Path})
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, errBody{Error: r.Method + " not allowed on " + r.URL.Path})
	})
	// Health checks are nearly all the traffic (every load balancer, every
	// second): an exact path skips the router, which matches each route in
	// turn and copies the request to attach its variables.
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if h, ok := health[req.URL.Path]; ok {
			switch req.Method {
			case http.MethodGet, http.MethodHead, http.MethodOptions:
				h.ServeHTTP(w, req)
				return
			}
		}
		r.ServeHTTP(w, req)
	})
}

type errBody struct {
	Error string `json:"error"`
}

// result is a handler's answer: a status (0 means 200) and a JSON body.
type result struct {
	code int
	body any
}

// api wraps a handler returning (result, error): errors map to codes in
// one place.
func (s *Server) api(h func(r *http.Request) (result, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, err := h(r)
		if err != nil {
			code := errorCode(err)
			if code >= 500 {
				s.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "error", err)
			}
			writeJSON(w, code, errBody{Error: err.Error()})
			return
		}
		if res.code == 0 {
			res.code = http.StatusOK
		}
		writeJSON(w, res.code, res.body)
	})
}

// write is api for requests that change state: authenticated when
// rest.auth is set, bodies size-limited.
func (s *Server) write(h func(r *http.Request) (result, error)) http.Handler {
	inner := s.api(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := s.auth.Load(); a != nil && !authorized(r, a) {
			// The status page asks for credentials itself: a challenge
			// would make the browser open its own dialog over it.
			if r.Header.Get("X-Requested-With") == "" {
				w.Header().Set("WWW-Authenticate", `Basic realm="pgwarden"`)
			}
			writeJSON(w, http.StatusUnauthorized, errBody{Error: "authentication required"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		inner.ServeHTTP(w, r.WithContext(agent.WithSource(r.Context(), requestSource(r))))
	})
}

// requestSource names who sent a request for the log of the agent that
// acts on it: the client's address, the user it authenticated as, and what
// the client says it is (the CLI sends X-Pgwarden-Source).
func requestSource(r *http.Request) string {
	src := "rest " + r.RemoteAddr
	if u, _, ok := r.BasicAuth(); ok {
		src += " user " + u
	}
	if c := r.Header.Get("X-Pgwarden-Source"); c != "" {
		// One short line: it lands in a log.
		c = strings.Map(func(r rune) rune {
			if r < ' ' || r == 0x7f {
				return -1
			}
			return r
		}, c)
		if len(c) > 80 {
			c = c[:80]
		}
		src += " via " + c
	}
	return src
}

func authorized(r *http.Request, a *config.Credential) bool {
	u, p, ok := r.BasicAuth()
	if !ok {
		return false
	}
	// Both compared, always, in constant time.
	uOK := subtle.ConstantTimeCompare([]byte(u), []byte(a.Username))
	pOK := subtle.ConstantTimeCompare([]byte(p), []byte(a.Password))
	return uOK&pOK == 1
}

var (
	errBadRequest = agent.ErrBadRequest
	errTooLarge   = errors.New("request body too large")
)

func errorCode(err error) int {
	var mbe *http.MaxBytesError
	var coded codedError
	switch {
	case errors.As(err, &coded):
		return coded.code
	case errors.As(err, &mbe), errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, agent.ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, agent.ErrPrecondition):
		return http.StatusPreconditionFailed
	case errors.Is(err, dcs.ErrKeyModified), errors.Is(err, agent.ErrFailsafeRefused):
		return http.StatusConflict
	case errors.Is(err, agent.ErrNotCompleted), errors.Is(err, dcs.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if v == nil {
		return
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decode reads exactly one JSON object into v: unknown fields, trailing
// data and non-objects are 400s naming the problem.
func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body larger than %d bytes", errTooLarge, maxBody)
		}
		return fmt.Errorf("%w: read body: %v", errBadRequest, err)
	}
	return decodeBytes(body, v)
}

func decodeBytes(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return fmt.Errorf("%w: body must be a JSON object", errBadRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: invalid JSON: %v", errBadRequest, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after the JSON object", errBadRequest)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the JSON object", errBadRequest)
	}
	return nil
}

type switchoverBody struct {
	Leader      string `json:"leader"`
	Candidate   string `json:"candidate"`
	ScheduledAt string `json:"scheduled_at"`
}

// parseSwitchover validates a /switchover body.
func parseSwitchover(body []byte) (agent.SwitchoverRequest, error) {
	var b switchoverBody
	if err := decodeBytes(body, &b); err != nil {
		return agent.SwitchoverRequest{}, err
	}
	if b.Leader == "" && b.Candidate == "" {
		return agent.SwitchoverRequest{}, fmt.Errorf("%w: name the leader or a candidate (or both)", errBadRequest)
	}
	req := agent.SwitchoverRequest{Leader: b.Leader, Candidate: b.Candidate}
	if b.ScheduledAt != "" {
		t, err := time.Parse(time.RFC3339, b.ScheduledAt)
		if err != nil {
			return req, fmt.Errorf("%w: scheduled_at %q: want RFC 3339 with a zone, like 2026-11-23T03:00:00Z", errBadRequest, b.ScheduledAt)
		}
		req.ScheduledAt = t
	}
	return req, nil
}

func (s *Server) postSwitchover(r *http.Request) (result, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return result{}, fmt.Errorf("%w: body larger than %d bytes", errTooLarge, maxBody)
	}
	req, err := parseSwitchover(body)
	if err != nil {
		return result{}, err
	}
	scheduled, err := s.o.Agent.Switchover(r.Context(), req)
	if err != nil {
		return result{}, err
	}
	if scheduled {
		return result{http.StatusAccepted, map[string]string{"message": "switchover scheduled for " + req.ScheduledAt.Format(time.RFC3339)}}, nil
	}
	return result{body: map[string]string{"message": "switched over: the new primary accepts writes"}}, nil
}

func (s *Server) deleteSwitchover(r *http.Request) (result, error) {
	if err := s.o.Agent.CancelSwitchover(r.Context()); err != nil {
		return result{}, err
	}
	return result{body: map[string]string{"message": "scheduled switchover cancelled"}}, nil
}

type failoverBody struct {
	Candidate string `json:"candidate"`
	Force     bool   `json:"force"`
}

func parseFailover(body []byte) (agent.FailoverRequest, error) {
	var b failoverBody
	if err := decodeBytes(body, &b); err != nil {
		return agent.FailoverRequest{}, err
	}
	if b.Candidate == "" {
		return agent.FailoverRequest{}, fmt.Errorf("%w: failover needs a candidate", errBadRequest)
	}
	return agent.FailoverRequest{Candidate: b.Candidate, Force: b.Force}, nil
}

func (s *Server) postFailover(r *http.Request) (result, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return result{}, fmt.Errorf("%w: body larger than %d bytes", errTooLarge, maxBody)
	}
	req, err := parseFailover(body)
	if err != nil {
		return result{}, err
	}
	if err := s.o.Agent.Failover(r.Context(), req); err != nil {
		return result{}, err
	}
	return result{body: map[string]string{"message": "failed over to " + req.Candidate}}, nil
}

// postFailsafe is a leader's failsafe round reaching this member: 200 when
// it confirms {"leader": name}, 409 with the reason when it does not.
func (s *Server) postFailsafe(r *http.Request) (result, error) {
	var b struct {
		Leader string  `json:"leader"`
		TTL    float64 `json:"ttl"`
	}
	if err := decode(r, &b); err != nil {
		return result{}, err
	}
	if b.Leader == "" {
		return result{}, fmt.Errorf("%w: name the leader", errBadRequest)
	}
	if b.TTL < 0 || b.TTL > 3600 {
		return result{}, fmt.Errorf("%w: ttl %g: want the leader's ttl in seconds (0-3600)", errBadRequest, b.TTL)
	}
	if err := s.o.Agent.ConfirmFailsafe(b.Leader, time.Duration(b.TTL*float64(time.Second))); err != nil {
		return result{}, err
	}
	return result{body: map[string]string{"message": "following " + b.Leader}}, nil
}

func (s *Server) simple(what string, f func(context.Context) error) func(r *http.Request) (result, error) {
	return func(r *http.Request) (result, error) {
		if err := f(r.Context()); err != nil {
			return result{}, err
		}
		return result{body: map[string]string{"message": what + " done"}}, nil
	}
}

func (s *Server) getConfig(r *http.Request) (result, error) {
	raw, _, err := s.o.Agent.Config(r.Context())
	if err != nil {
		return result{}, err
	}
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	return result{body: json.RawMessage(raw)}, nil
}

// patchedConfig merges patch (RFC 7396) into the stored configuration.
func patchedConfig(stored, patch []byte) ([]byte, error) {
	var p map[string]any
	if err := decodeAny(patch, &p); err != nil {
		return nil, err
	}
	// The patch was checked above: what fails now is the stored document.
	return config.MergePatch(stored, patch)
}

// decodeAny reads one JSON object (any keys: the agent validates them).
func decodeAny(body []byte, v *map[string]any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return fmt.Errorf("%w: body must be a JSON object", errBadRequest)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: invalid JSON: %v", errBadRequest, err)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the JSON object", errBadRequest)
	}
	return nil
}

func (s *Server) patchConfig(r *http.Request) (result, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return result{}, fmt.Errorf("%w: body larger than %d bytes", errTooLarge, maxBody)
	}
	stored, rev, err := s.o.Agent.Config(r.Context())
	if err != nil {
		return result{}, err
	}
	merged, err := patchedConfig(stored, body)
	if err != nil {
		return result{}, err
	}
	if err := s.o.Agent.SetConfig(r.Context(), merged, rev); err != nil {
		return result{}, err
	}
	return result{body: json.RawMessage(merged)}, nil
}

func (s *Server) putConfig(r *http.Request) (result, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return result{}, fmt.Errorf("%w: body larger than %d bytes", errTooLarge, maxBody)
	}
	var m map[string]any
	if err := decodeAny(body, &m); err != nil {
		return result{}, err
	}
	_, rev, err := s.o.Agent.Config(r.Context())
	if err != nil {
		return result{}, err
	}
	// If-Match: the revision the client edited (edit-config): a change
	// made meanwhile is a 409, not overwritten.
	if v := r.Header.Get("If-Match"); v != "" {
		if rev, err = strconv.ParseInt(strings.Trim(v, `"`), 10, 64); err != nil || rev < 0 {
			return result{}, fmt.Errorf("%w: If-Match %q: want the configuration's revision", errBadRequest, v)
		}
	}
	raw, _ := json.Marshal(m)
	if err := s.o.Agent.SetConfig(r.Context(), raw, rev); err != nil {
		return result{}, err
	}
	return result{body: json.RawMessage(raw)}, nil
}

// patroniHistory is the history as Patroni's GET /history lists it: per
// change of timeline, [the timeline that ended, the LSN where it ended, the
// reason, when, the new leader]. A pending entry (a promotion not done
// yet) is left out: no timeline has ended there.
func patroniHistory(h []dcs.HistoryEntry) [][]any {
	out := make([][]any, 0, len(h))
	for _, e := range h {
		if e.Pending {
			continue
		}
		parent := e.Parent
		if parent == 0 && e.Timeline > 1 {
			parent = e.Timeline - 1
		}
		out = append(out, []any{parent, e.LSN, e.Reason, e.Time.Format(time.RFC3339Nano), e.NewLeader})
	}
	return out
}

func (s *Server) getHistory(r *http.Request) (result, error) {
	h, err := s.o.Agent.History(r.Context())
	if err != nil {
		return result{}, err
	}
	return result{body: patroniHistory(h)}, nil
}

type clusterMember struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	State    string `json:"state"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	APIURL   string `json:"api_url"`
	Timeline uint32 `json:"timeline,omitempty"`
	// LSN is the member's WAL position (a replica's received one), as
	// PostgreSQL writes it; the lags are bytes behind the leader's last
	// position (Lag is ReplayLag, as before).
	LSN            string            `json:"lsn,omitempty"`
	Lag            *uint64           `json:"lag,omitempty"`
	ReceiveLag     *uint64           `json:"receive_lag,omitempty"`
	ReplayLag      *uint64           `json:"replay_lag,omitempty"`
	PendingRestart bool              `json:"pending_restart,omitempty"`
	Priority       int               `json:"priority"`
	Tags           map[string]string `json:"tags,omitempty"`
	// Waiting: with no leader, why this member does not take over.
	Waiting string `json:"waiting,omitempty"`
	// Error: the action that keeps failing there, and its last error.
	Error string `json:"error,omitempty"`
}

type scheduled struct {
	At   string `json:"at"`
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

func (s *Server) getCluster(r *http.Request) (result, error) {
	c, err := s.o.Agent.Cluster(r.Context())
	if err != nil {
		return result{}, err
	}
	st := s.o.Agent.Status()
	return result{body: clusterView(c, st.Scope, st.Pause)}, nil
}

// clusterView is GET /cluster's body: members with the leader first.
func clusterView(c *dcs.Cluster, scope string, pause bool) map[string]any {
	leader := ""
	if c.Leader != nil {
		leader = c.Leader.Name
	}
	var members []clusterMember
	for _, m := range c.Members {
		host, port := dcs.HostPort(m.ConnURL)
		cm := clusterMember{Name: m.Name, Role: m.Role, State: m.State, Host: host, Port: port, APIURL: patroniURL(m.APIURL),
			Timeline: m.Timeline, Priority: m.Priority, Tags: m.Tags, Waiting: m.Waiting, PendingRestart: m.PendingRestart, Error: m.Error}
		if m.WALPosition > 0 {
			cm.LSN = m.WALPosition.String()
		}
		switch {
		case m.Name == leader:
			cm.Role = "leader"
		case m.Role == "replica":
			if c.Sync != nil && slices.Contains(c.Sync.SyncStandby, m.Name) {
				cm.Role = "sync_standby"
			}
			if m.State == "running" && m.Streaming {
				// As `list` shows it, and as Patroni names it; the
				// record in etcd keeps "running", which agents read.
				cm.State = "streaming"
			}
			receive, replay := c.ReceiveLag(m), c.ReplayLag(m)
			cm.ReceiveLag, cm.ReplayLag, cm.Lag = &receive, &replay, &replay
		}
		members = append(members, cm)
	}
	// Leader first, then by name (Members come sorted by name).
	for i, m := range members {
		if m.Role == "leader" && i > 0 {
			members = append([]clusterMember{m}, append(members[:i:i], members[i+1:]...)...)
			break
		}
	}
	out := map[string]any{"scope": scope, "members": members, "pause": pause}
	if f := c.Failover; f != nil && f.Kind == "switchover" && !f.ScheduledAt.IsZero() {
		out["scheduled_switchover"] = scheduled{At: f.ScheduledAt.Format(time.RFC3339), From: f.Leader, To: f.Candidate}
	}
	return out
}

// patroniURL is a member's API URL as Patroni publishes it: the address of
// its /patroni. The record in etcd keeps the base URL, to which peers
// append paths themselves.
func patroniURL(base string) string {
	if base == "" {
		return ""
	}
	return strings.TrimRight(base, "/") + "/patroni"
}
