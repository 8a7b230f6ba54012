package rest

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/config"
	"github.com/pgwarden/pgwarden/dcs"
)

// TestUIPage: /ui is one self-contained page (no external asset).
func TestUIPage(t *testing.T) {
	ts := newTestServer(t, &fakeAgent{st: primaryStatus}, nil)
	code, body := do(t, ts, "GET", "/ui", "")
	if code != 200 || !strings.Contains(body, "<title>pgwarden</title>") || !strings.Contains(body, `new EventSource("/ui/events")`) {
		t.Fatalf("/ui = %d", code)
	}
	for _, ext := range []string{`src="http`, `href="http`, "<link ", `src="//`} {
		if strings.Contains(body, ext) {
			t.Errorf("/ui loads an external asset (%s)", ext)
		}
	}
}

// TestUIEvents: the stream sends the snapshot at once and again when it
// changes, with the cluster and the history in Patroni's shape.
func TestUIEvents(t *testing.T) {
	f := &fakeAgent{st: primaryStatus}
	f.st.DCSClusterView = &dcs.Cluster{Leader: &dcs.Leader{Name: "a"},
		Members: []dcs.Member{{Name: "a", Role: "primary", State: "running"}, {Name: "b", Role: "replica", State: "running", Streaming: true}},
		History: []dcs.HistoryEntry{{Timeline: 2, Parent: 1, LSN: 7, Reason: "switchover", NewLeader: "a"}}}
	ts := newTestServer(t, f, nil)
	resp, err := http.Get(ts.URL + "/ui/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan uiEvent, 4)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var ev uiEvent
				if json.Unmarshal([]byte(d), &ev) == nil {
					events <- ev
				}
			}
		}
		close(events)
	}()
	next := func() uiEvent {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("stream ended")
			}
			return ev
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5 s")
		}
		return uiEvent{}
	}
	ev := next()
	members, _ := ev.Cluster["members"].([]any)
	if ev.Node.Name != "a" || len(members) != 2 || len(ev.History) != 1 || ev.History[0][2] != "switchover" {
		t.Fatalf("first event %+v", ev)
	}
	f.mu.Lock()
	f.st.Pause = true
	f.mu.Unlock()
	for range 20 {
		if ev := next(); ev.Node.Pause {
			return
		}
	}
	t.Fatal("the paused snapshot was not sent")
}

// TestUIAuthNoChallenge: the page's requests get a 401 without a Basic
// challenge (the browser would open its own dialog over the page); others
// keep it.
func TestUIAuthNoChallenge(t *testing.T) {
	ts := newTestServer(t, &fakeAgent{st: primaryStatus}, &config.Credential{Username: "op", Password: "pw"})
	for _, page := range []bool{false, true} {
		req, _ := http.NewRequest("POST", ts.URL+"/reload", nil)
		if page {
			req.Header.Set("X-Requested-With", "pgwarden-ui")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("WWW-Authenticate") != ""; resp.StatusCode != 401 || got == page {
			t.Errorf("page %v: %d, challenge %v", page, resp.StatusCode, got)
		}
	}
}
