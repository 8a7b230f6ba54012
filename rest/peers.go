package rest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/agent"
	"github.com/pgwarden/pgwarden/backup"
	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
	"github.com/pgwarden/pgwarden/wal"
)

// PeerClient asks other members for their state through GET /patroni, the
// way the agent compares WAL positions during a leader race and checks that
// no peer still runs as primary.
type PeerClient struct {
	// Self is skipped.
	Self string
	// Client and Auth (sent with POSTs: failsafe rounds, drills, as the
	// REST API asks) are set before the first call; SetTLS and SetAuth
	// replace them later.
	Client *http.Client
	Auth   *config.Credential
	log    hclog.Logger

	mu sync.Mutex
	// down is whether each member's last fetch failed, so a peer that
	// stays unreachable is logged once, not every loop, even when the
	// error's text varies between attempts (a TLS refusal reads
	// differently depending on when the transport notices it).
	down map[string]bool
}

// NewPeerClient makes a client with connection reuse and a timeout per
// request. tc is the TLS of https peers (PeerTLS: this member's rest.tls
// CA and client certificate); nil means the system roots and no client
// certificate.
func NewPeerClient(self string, timeout time.Duration, tc *tls.Config, log hclog.Logger) *PeerClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2
	tr.TLSClientConfig = tc
	return &PeerClient{Self: self, Client: &http.Client{Timeout: timeout, Transport: tr}, log: log, down: map[string]bool{}}
}

// SetAuth replaces the credentials sent with POSTs, from the next call on.
func (pc *PeerClient) SetAuth(a *config.Credential) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.Auth = a
}

// SetTLS makes the next calls use tc (PeerTLS of a re-read rest.tls: a
// rotated client certificate, another CA), on new connections.
func (pc *PeerClient) SetTLS(tc *tls.Config) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	old := pc.Client
	tr := old.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	pc.Client = &http.Client{Timeout: old.Timeout, Transport: tr}
	old.CloseIdleConnections()
}

func (pc *PeerClient) client() (*http.Client, *config.Credential) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.Client, pc.Auth
}

// peerStatus is the part of GET /patroni a peer race needs.
type peerStatus struct {
	State    string `json:"state"`
	Role     string `json:"role"`
	Timeline uint32 `json:"timeline"`
	// Unguarded: the peer's watchdog cannot fence it.
	Unguarded string `json:"unguarded"`
	// ClusterUnlocked: its last loop saw no leader key.
	ClusterUnlocked bool `json:"cluster_unlocked"`
	XLog            struct {
		Location         wal.LSN `json:"location"`
		ReceivedLocation wal.LSN `json:"received_location"`
		ReplayedLocation wal.LSN `json:"replayed_location"`
	} `json:"xlog"`
}

// Fetch asks every member but Self at once; a member that does not answer
// within the client's timeout (or ctx) is reported unreachable. Priority
// and nofailover come from the member records.
func (pc *PeerClient) Fetch(ctx context.Context, ms []dcs.Member) []agent.Peer {
	out := make([]agent.Peer, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		out[i] = agent.Peer{Name: m.Name, Priority: m.Priority, NoFailover: m.RefusesFailover()}
		if m.Name == pc.Self || m.APIURL == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := pc.get(ctx, strings.TrimRight(m.APIURL, "/")+"/patroni")
			pc.note(m.Name, err)
			if err != nil {
				return
			}
			out[i].Observe(agent.PeerReport{
				Role: st.Role, State: st.State, Timeline: st.Timeline,
				Unguarded: st.Unguarded != "", ClusterUnlocked: st.ClusterUnlocked,
				Location: st.XLog.Location, Received: st.XLog.ReceivedLocation, Replayed: st.XLog.ReplayedLocation,
			})
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

func (pc *PeerClient) get(ctx context.Context, url string) (peerStatus, error) {
	var st peerStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	client, _ := pc.client()
	resp, err := client.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	// /patroni answers 200 while the agent runs; a health-check style 503
	// body is still a valid status.
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("GET %s: %d with a body that is not a status: %w", url, resp.StatusCode, err)
	}
	return st, nil
}

// Confirm runs a failsafe round: POST /failsafe {"leader": leader} to
// every member but Self at once, with the REST credentials when set. It
// returns nil only if every one answered 200.
func (pc *PeerClient) Confirm(ctx context.Context, ms []dcs.Member, leader string, ttl time.Duration) error {
	body, _ := json.Marshal(map[string]any{"leader": leader, "ttl": ttl.Seconds()})
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		if m.Name == pc.Self {
			continue
		}
		if m.APIURL == "" {
			errs[i] = fmt.Errorf("member %s has no api_url", m.Name)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = pc.post(ctx, strings.TrimRight(m.APIURL, "/")+"/failsafe", body)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("member %s: %w", m.Name, errs[i])
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (pc *PeerClient) post(ctx context.Context, url string, body []byte) error {
	client, _ := pc.client()
	resp, err := pc.postWith(ctx, client, url, body)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// postWith POSTs body to url with the REST credentials through client; a
// status other than 200 is an error with the peer's own message.
func (pc *PeerClient) postWith(ctx context.Context, client *http.Client, url string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if _, a := pc.client(); a != nil {
		req.SetBasicAuth(a.Username, a.Password)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
		return nil, fmt.Errorf("POST %s: %d %s", url, resp.StatusCode, e.Error)
	}
	return resp, nil
}

// RemoteDrill asks peer to run a restore drill on its host under the
// backup lock lockID (POST /drill) and waits for its outcome: the
// request lasts as long as the drill, with no timeout but ctx's (the
// leader's run: leadership or the lock going ends it, and with it the
// drill on the peer). ran is false when the peer could not run it.
func (pc *PeerClient) RemoteDrill(ctx context.Context, peer dcs.Member, lockID string) (backup.DrillResult, bool, error) {
	body, _ := json.Marshal(drillBody{ID: lockID})
	// The peer client's per-request timeout suits status calls, not a
	// restore: same transport (TLS, connection reuse), no timeout.
	client, _ := pc.client()
	long := &http.Client{Transport: client.Transport}
	url := strings.TrimRight(peer.APIURL, "/") + "/drill"
	resp, err := pc.postWith(ctx, long, url, body)
	if err != nil {
		return backup.DrillResult{}, false, fmt.Errorf("ask %s for a drill: %w", peer.Name, err)
	}
	defer resp.Body.Close()
	var a drillAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&a); err != nil {
		return backup.DrillResult{}, false, fmt.Errorf("ask %s for a drill: an answer that is not a drill's outcome: %w", peer.Name, err)
	}
	if a.Error != "" {
		return a.Result, true, errors.New(a.Error)
	}
	return a.Result, true, nil
}

// note logs a peer that stops answering, or answers again, once per
// change: an unreachable peer drops out of the WAL comparison, and a TLS
// mistake (unknown CA, a refused client certificate) must be visible.
func (pc *PeerClient) note(member string, err error) {
	pc.mu.Lock()
	wasDown, seen := pc.down[member]
	pc.down[member] = err != nil
	pc.mu.Unlock()
	switch {
	case seen && wasDown == (err != nil):
	case err != nil:
		pc.log.Warn("peer unreachable", "peer", member, "error", err)
	case wasDown:
		pc.log.Info("peer reachable again", "peer", member)
	}
}
