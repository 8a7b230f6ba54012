package rest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/config"
)

// TestScheduledRestart: POST /restart with a schedule is 202 and shows in
// /patroni; a second one is 409; DELETE cancels it (404 when none); bad
// bodies are 400 and restart nothing; restart_pending restarts only when
// a parameter waits for it.
func TestScheduledRestart(t *testing.T) {
	f := &fakeAgent{st: primaryStatus}
	ts := newTestServer(t, f, nil)
	at := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if code, body := do(t, ts, "POST", "/restart", fmt.Sprintf(`{"schedule":%q,"restart_pending":true}`, at)); code != 202 {
		t.Fatalf("scheduled restart = %d %s; want 202", code, body)
	}
	_, body := do(t, ts, "GET", "/patroni", "")
	var v struct {
		Scheduled *scheduledRestart `json:"scheduled_restart"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil || v.Scheduled == nil || v.Scheduled.Schedule != at || !v.Scheduled.RestartPending {
		t.Fatalf("/patroni scheduled_restart: %s", body)
	}
	if code, _ := do(t, ts, "POST", "/restart", fmt.Sprintf(`{"schedule":%q}`, at)); code != 409 {
		t.Fatalf("second scheduled restart = %d; want 409", code)
	}
	if code, _ := do(t, ts, "DELETE", "/restart", ""); code != 200 {
		t.Fatalf("cancel = %d; want 200", code)
	}
	if code, _ := do(t, ts, "DELETE", "/restart", ""); code != 404 {
		t.Fatalf("cancel without a schedule = %d; want 404", code)
	}
	for _, bad := range []string{`{"schedule":"tomorrow"}`, `{"schedule":"2001-01-01T00:00:00Z"}`, `{"when":"now"}`, `[]`} {
		if code, body := do(t, ts, "POST", "/restart", bad); code != 400 {
			t.Errorf("POST /restart %s = %d %s; want 400", bad, code, body)
		}
	}
	if code, body := do(t, ts, "POST", "/restart", `{"restart_pending":true}`); code != 412 || !strings.Contains(body, "restart_pending") {
		t.Fatalf("restart_pending without one pending = %d %s; want 412", code, body)
	}
	if len(f.calls) != 0 {
		t.Fatalf("restarted: %v", f.calls)
	}
	f.st.PendingRestart = true
	if code, _ := do(t, ts, "POST", "/restart", `{"restart_pending":true}`); code != 200 || len(f.calls) != 1 {
		t.Fatalf("restart_pending with one pending = %d, calls %v", code, f.calls)
	}
	if code, _ := do(t, ts, "POST", "/restart", ""); code != 200 || len(f.calls) != 2 {
		t.Fatalf("plain restart = %d, calls %v", code, f.calls)
	}
}

// TestScheduledRestartFires: a restart scheduled a moment ahead runs.
func TestScheduledRestartFires(t *testing.T) {
	f := &fakeAgent{st: primaryStatus}
	s := newTestServer(t, f, nil)
	at := time.Now().Add(1100 * time.Millisecond).UTC().Format(time.RFC3339)
	if code, body := do(t, s, "POST", "/restart", fmt.Sprintf(`{"schedule":%q}`, at)); code != 202 && code != 200 {
		t.Fatalf("schedule = %d %s", code, body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		n := len(f.calls)
		f.mu.Unlock()
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("scheduled restart did not run within 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRequestSource: the agent learns who asked: the client's address,
// the user it authenticated as and what the CLI says it is.
func TestRequestSource(t *testing.T) {
	f := &fakeAgent{st: primaryStatus}
	ts := newTestServer(t, f, &config.Credential{Username: "op", Password: "pw"})
	req, _ := http.NewRequest("POST", ts.URL+"/reload", nil)
	req.SetBasicAuth("op", "pw")
	req.Header.Set("X-Pgwarden-Source", "cli alice@laptop\t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(f.source, "rest 127.0.0.1:") || !strings.HasSuffix(f.source, " user op via cli alice@laptop") {
		t.Fatalf("source = %q", f.source)
	}
}
