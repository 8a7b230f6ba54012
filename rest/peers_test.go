package rest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/dcs"
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

	pc := NewPeerClient("me", 300*time.Millisecond, false)
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
		wal            uint64
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
