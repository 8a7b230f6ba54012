package rest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/wal"
)

// check decides a health path from the snapshot and the query: ok, or the
// reason it is not (an error for a malformed query).
type check func(st *agent.Status, q url.Values) (ok bool, err error)

// checkPrimary: the leader, running as primary and answering. A primary
// that runs but does not answer the agent is not vouched for.
func checkPrimary(st *agent.Status, q url.Values) (bool, error) {
	return st.IsLeader && st.Running && st.Answering && !st.InRecovery, nil
}

// streamingReplica: a running standby whose WAL receiver streams, within
// ?lag= when given.
func streamingReplica(st *agent.Status, q url.Values) (bool, error) {
	if !st.Running || !st.Answering || !st.InRecovery || !st.Streaming {
		return false, nil
	}
	if v := q.Get("lag"); v != "" {
		max, err := parseBytes(v)
		if err != nil {
			return false, err
		}
		if st.Lag() > max {
			return false, nil
		}
	}
	return true, nil
}

func checkReplica(st *agent.Status, q url.Values) (bool, error) {
	ok, err := streamingReplica(st, q)
	return ok && !st.NoLoadBalance, err
}

func checkReadOnly(st *agent.Status, q url.Values) (bool, error) {
	if ok, _ := checkPrimary(st, q); ok {
		return true, nil
	}
	return checkReplica(st, q)
}

func checkSync(st *agent.Status, q url.Values) (bool, error) {
	ok, err := streamingReplica(st, q)
	return ok && st.Synchronous, err
}

func checkAsync(st *agent.Status, q url.Values) (bool, error) {
	ok, err := streamingReplica(st, q)
	return ok && !st.Synchronous, err
}

func checkHealth(st *agent.Status, q url.Values) (bool, error) { return st.Running, nil }

func checkLiveness(st *agent.Status, q url.Values) (bool, error) {
	ttl := st.TTL
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	return !st.LastLoop.IsZero() && time.Since(st.LastLoop) <= ttl, nil
}

func checkReadiness(st *agent.Status, q url.Values) (bool, error) {
	if ok, _ := checkPrimary(st, q); ok {
		return true, nil
	}
	return streamingReplica(st, q)
}

// tagsMatch applies ?tag_<key>=<value> filters.
func tagsMatch(st *agent.Status, q url.Values) bool {
	for k, vs := range q {
		key, ok := strings.CutPrefix(k, "tag_")
		if !ok {
			continue
		}
		for _, v := range vs {
			if st.Tags[key] != v {
				return false
			}
		}
	}
	return true
}

// health answers a health path from the snapshot alone: no I/O.
func (s *Server) health(c check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := s.o.Agent.Status()
		var q url.Values // nil reads as empty: most checks carry no query
		if r.URL.RawQuery != "" {
			q = r.URL.Query()
		}
		ok, err := c(st, q)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errBody{Error: err.Error()})
			return
		}
		code := http.StatusOK
		if !ok || !tagsMatch(st, q) {
			code = http.StatusServiceUnavailable
		}
		s.writeStatus(w, r, code, st)
	})
}

// writeStatus answers with the snapshot's JSON; HEAD and OPTIONS get the
// code alone.
func (s *Server) writeStatus(w http.ResponseWriter, r *http.Request, code int, st *agent.Status) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if r.Method == http.MethodGet {
		_, _ = w.Write(s.statusBody(st))
	}
}

// encodedStatus is a snapshot's JSON body, encoded once: load balancers
// ask many times a second and the snapshot changes about once a loop.
type encodedStatus struct {
	st   *agent.Status
	body []byte
}

func (s *Server) statusBody(st *agent.Status) []byte {
	if e := s.encoded.Load(); e != nil && e.st == st {
		return e.body
	}
	body, err := json.MarshalIndent(s.nodeStatus(st), "", "  ")
	if err != nil {
		body = []byte(`{"error":` + strconv.Quote(err.Error()) + `}`)
	}
	body = append(body, '\n')
	s.encoded.Store(&encodedStatus{st: st, body: body})
	return body
}

func (s *Server) statusHandler(w http.ResponseWriter, r *http.Request) {
	s.writeStatus(w, r, http.StatusOK, s.o.Agent.Status())
}

// parseBytes reads a byte count: "1048576", "16kB", "16MB", "1GB" (1024
// based, as PostgreSQL's units).
func parseBytes(v string) (uint64, error) {
	v = strings.TrimSpace(v)
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"KB", 1 << 10}, {"B", 1}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > (1<<63)/mult {
		return 0, fmt.Errorf("lag %q: want a byte count like 1048576, 16kB, 16MB or 1GB", v)
	}
	return n * mult, nil
}

type xlog struct {
	Location         *wal.LSN `json:"location,omitempty"`
	ReceivedLocation *wal.LSN `json:"received_location,omitempty"`
	ReplayedLocation *wal.LSN `json:"replayed_location,omitempty"`
	Paused           *bool    `json:"paused,omitempty"`
}

type nodeStatus struct {
	Name             string            `json:"name"`
	State            string            `json:"state"`
	Role             string            `json:"role"`
	ServerVersion    int               `json:"server_version,omitempty"`
	PostmasterStart  string            `json:"postmaster_start_time,omitempty"`
	Timeline         uint32            `json:"timeline,omitempty"`
	XLog             xlog              `json:"xlog"`
	ReplicationState string            `json:"replication_state,omitempty"`
	Leader           string            `json:"leader,omitempty"`
	IsLeader         bool              `json:"is_leader"`
	Lag              *uint64           `json:"lag,omitempty"`
	Pause            bool              `json:"pause"`
	FailsafeMode     bool              `json:"failsafe_mode"`
	ClusterUnlocked  bool              `json:"cluster_unlocked"`
	Tags             map[string]string `json:"tags,omitempty"`
	Priority         int               `json:"priority"`
	SystemID         string            `json:"database_system_identifier,omitempty"`
	Replication      int               `json:"replication_connections"`
	// WALSenders is Patroni's "replication": the standbys streaming from
	// this server.
	WALSenders     []walSender `json:"replication,omitempty"`
	DCSLastSeen    int64       `json:"dcs_last_seen,omitempty"`
	PendingRestart bool        `json:"pending_restart"`
	// ScheduledRestart is the restart an operator scheduled here.
	ScheduledRestart *scheduledRestart `json:"scheduled_restart,omitempty"`
	Pooler           string            `json:"pooler,omitempty"`
	Unguarded        string            `json:"unguarded,omitempty"`
	LastError        *lastError        `json:"last_error,omitempty"`
	LastLoop         string            `json:"last_loop,omitempty"`
	Action           string            `json:"action,omitempty"`
	Reason           string            `json:"reason,omitempty"`
	Patroni          patroniInfo       `json:"patroni"`
}

// lastError is the action that keeps failing.
type lastError struct {
	Action   string `json:"action"`
	Error    string `json:"error"`
	Failures int    `json:"failures"`
	Since    string `json:"since"`
}

type walSender struct {
	ApplicationName string `json:"application_name"`
	ClientAddr      string `json:"client_addr"`
	State           string `json:"state"`
	SyncState       string `json:"sync_state"`
}

type scheduledRestart struct {
	Schedule       string `json:"schedule"`
	RestartPending bool   `json:"restart_pending,omitempty"`
}

// postmasterTimeLayout is how PostgreSQL (and so Patroni) prints
// pg_postmaster_start_time().
const postmasterTimeLayout = "2006-01-02 15:04:05.999999-07:00"

type patroniInfo struct {
	Version string `json:"version"`
	Scope   string `json:"scope"`
	Name    string `json:"name"`
}

// nodeStatus is GET /patroni's body, with Patroni's field names where they
// mean the same.
func (s *Server) nodeStatus(st *agent.Status) nodeStatus {
	ns := nodeStatus{
		Name: st.Name, State: st.State, Role: st.Role, ServerVersion: st.ServerVersion, Timeline: st.Timeline,
		Leader: st.Leader, IsLeader: st.IsLeader, Pause: st.Pause, FailsafeMode: st.FailsafeMode, ClusterUnlocked: st.ClusterUnlocked,
		Tags: st.Tags, Priority: st.Priority, SystemID: st.SystemID, Replication: st.ReplicationConns,
		Pooler: st.Pooler, Unguarded: st.Unguarded, Action: st.Action, Reason: st.Reason,
		PendingRestart: st.PendingRestart,
		Patroni:        patroniInfo{Version: s.o.Version, Scope: st.Scope, Name: st.Name},
	}
	for _, w := range st.WALSenders {
		ns.WALSenders = append(ns.WALSenders, walSender(w))
	}
	if !st.LastDCSContact.IsZero() {
		ns.DCSLastSeen = st.LastDCSContact.Unix()
	}
	if at, pendingOnly, ok := s.restarts.scheduled(); ok {
		ns.ScheduledRestart = &scheduledRestart{Schedule: at.Format(time.RFC3339), RestartPending: pendingOnly}
	}
	if ns.State == "" {
		ns.State = "unknown"
	}
	if st.Failing != "" {
		ns.LastError = &lastError{Action: st.Failing, Error: st.LastError, Failures: st.Failures,
			Since: st.FailingSince.Format(time.RFC3339)}
	}
	if !st.PostmasterStart.IsZero() {
		ns.PostmasterStart = st.PostmasterStart.Format(postmasterTimeLayout)
	}
	if !st.LastLoop.IsZero() {
		ns.LastLoop = st.LastLoop.Format(time.RFC3339Nano)
	}
	if st.Running && st.Answering {
		if st.InRecovery {
			rcv, rep, paused := st.ReceivedLSN, st.ReplayedLSN, false
			ns.XLog = xlog{ReceivedLocation: &rcv, ReplayedLocation: &rep, Paused: &paused}
			lag := st.Lag()
			ns.Lag = &lag
			if st.Streaming {
				ns.ReplicationState = "streaming"
			}
		} else {
			loc := st.WALPosition
			ns.XLog = xlog{Location: &loc}
		}
	}
	return ns
}
