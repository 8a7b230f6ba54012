package rest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// fuzzBody sends arbitrary bodies to path: no panic, and never a 500.
func fuzzBody(f *testing.F, method, path string, seeds ...string) {
	for _, s := range seeds {
		f.Add(s)
	}
	fa := &fakeAgent{st: primaryStatus, cfg: []byte(`{"ttl":10}`)}
	// Not testlog: the fuzz target runs under its own *testing.T per input,
	// and the refused bodies would log thousands of expected lines.
	s, err := NewServer(Options{Agent: fa}, hclog.NewNullLogger())
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 || w.Code < 200 {
			t.Fatalf("%s %s %q = %d %s", method, path, body, w.Code, w.Body)
		}
		if w.Code >= 400 && !strings.Contains(w.Body.String(), "error") {
			t.Fatalf("%s %s %q = %d without a reason", method, path, body, w.Code)
		}
	})
}

func FuzzSwitchoverBody(f *testing.F) {
	fuzzBody(f, http.MethodPost, "/switchover", `{"leader":"a","candidate":"b"}`, `{"scheduled_at":"2030-01-01T00:00:00Z","candidate":"b"}`,
		`{`, `[]`, `null`, `{"leader":1}`, `{"leader":"a"}{}`, "\x00", `{"candidate":"b","scheduled_at":"2030-13-01T00:00:00Z"}`)
}

func FuzzFailoverBody(f *testing.F) {
	fuzzBody(f, http.MethodPost, "/failover", `{"candidate":"b"}`, `{"candidate":"b","force":true}`, `{"force":"yes"}`, `{}`, `"x"`)
}

func FuzzConfigPatchBody(f *testing.F) {
	fuzzBody(f, http.MethodPatch, "/config", `{"ttl":20}`, `{"ttl":null}`, `{"parameters":{"a":"b"}}`, `{"a":{"b":{"c":null}}}`, `[1]`, `{"ttl":1e400}`, `{`)
}
