package rest

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/pgwarden/pgwarden/agent"
)

// The status page: one HTML file with its style and script inline (no
// external assets, nothing to build), fed by server-sent events made from
// the agent's snapshot, and acting through the same REST API (and its
// auth) as curl and the CLI.

//go:embed ui/index.html
var uiPage []byte

func (s *Server) getUI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// The page's own inline style and script, nothing else; no framing.
	h.Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(uiPage)
}

// uiEvent is one update of the page: this member, the cluster and the
// timeline history as the snapshot has them.
type uiEvent struct {
	Node    nodeStatus     `json:"node"`
	Cluster map[string]any `json:"cluster,omitempty"`
	History [][]any        `json:"history"`
}

func (s *Server) uiEvent(st *agent.Status) ([]byte, error) {
	ev := uiEvent{Node: s.nodeStatus(st), History: [][]any{}}
	if c := st.DCSClusterView; c != nil {
		ev.Cluster = clusterView(c, st.Scope, st.Pause)
		ev.History = patroniHistory(c.History)
	}
	return json.Marshal(ev)
}

// Snapshots change about once a loop; the stream looks this often and
// sends only a changed one, with a comment now and then so proxies keep
// the connection.
const (
	uiPoll      = 250 * time.Millisecond
	uiKeepalive = 15 * time.Second
)

// getUIEvents streams the snapshot as server-sent events until the client
// goes or the server shuts down.
func (s *Server) getUIEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// The server's write timeout bounds requests, not a stream.
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	var sent *agent.Status
	poll := time.NewTicker(uiPoll)
	defer poll.Stop()
	lastWrite := time.Now()
	for {
		if st := s.o.Agent.Status(); st != sent {
			body, err := s.uiEvent(st)
			if err != nil {
				s.log.Warn("status page event", "error", err)
				return
			}
			if _, err := fmt.Fprintf(w, "data: %s\n\n", body); err != nil {
				return
			}
			sent, lastWrite = st, time.Now()
		} else if time.Since(lastWrite) > uiKeepalive {
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			lastWrite = time.Now()
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		case <-poll.C:
		}
	}
}
