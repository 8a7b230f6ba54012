package rest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/dcs"
)

// PeerClient asks other members for their state through GET /patroni, the
// way the agent compares WAL positions during a leader race.
type PeerClient struct {
	// Self is skipped.
	Self   string
	Client *http.Client
}

// NewPeerClient makes a client with connection reuse and a timeout per
// request; insecure skips TLS verification for members with self-signed
// certificates.
func NewPeerClient(self string, timeout time.Duration, insecure bool) *PeerClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2
	if insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // operator's choice for self-signed member certs
	}
	return &PeerClient{Self: self, Client: &http.Client{Timeout: timeout, Transport: tr}}
}

// peerStatus is the part of GET /patroni a peer race needs.
type peerStatus struct {
	State    string `json:"state"`
	Role     string `json:"role"`
	Timeline uint32 `json:"timeline"`
	// Unguarded: the peer's watchdog cannot fence it.
	Unguarded string `json:"unguarded"`
	XLog      struct {
		Location         uint64 `json:"location"`
		ReceivedLocation uint64 `json:"received_location"`
		ReplayedLocation uint64 `json:"replayed_location"`
	} `json:"xlog"`
}

// Fetch asks every member but Self at once; a member that does not answer
// within the client's timeout (or ctx) is reported unreachable. Priority
// and nofailover come from the member records.
func (pc *PeerClient) Fetch(ctx context.Context, ms []dcs.Member) []agent.Peer {
	out := make([]agent.Peer, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		out[i] = agent.Peer{Name: m.Name, Priority: m.Priority, NoFailover: m.NoFailover || m.Tags["nofailover"] == "true"}
		if m.Name == pc.Self || m.APIURL == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, ok := pc.get(ctx, strings.TrimRight(m.APIURL, "/")+"/patroni")
			if !ok {
				return
			}
			p := &out[i]
			p.Reachable = true
			p.Unguarded = st.Unguarded != ""
			running := st.State == "running"
			p.Running = running
			// A primary that runs but does not answer its agent (state
			// "unresponsive", "starting" or "stopping") may still accept
			// writes: it holds the race back like a running one.
			p.Primary = (st.Role == "primary" || st.Role == "master") && mayRun(st.State)
			if running {
				p.Timeline = st.Timeline
				p.WAL = max(st.XLog.Location, st.XLog.ReceivedLocation, st.XLog.ReplayedLocation)
			}
		}()
	}
	wg.Wait()
	var res []agent.Peer
	for _, p := range out {
		if p.Name != pc.Self {
			res = append(res, p)
		}
	}
	return res
}

func (pc *PeerClient) get(ctx context.Context, url string) (peerStatus, bool) {
	var st peerStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, false
	}
	resp, err := pc.Client.Do(req)
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	// /patroni answers 200 while the agent runs; a health-check style 503
	// body is still a valid status.
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return st, false
	}
	return st, true
}

// mayRun: a peer's reported PostgreSQL state in which its server may run.
func mayRun(state string) bool {
	switch state {
	case "running", "unresponsive", "starting", "stopping":
		return true
	}
	return false
}
