// Package testlog gives tests an hclog.Logger that writes through t.Log, so
// a failing test shows what the code under test logged, next to the failure
// and only for that test.
package testlog

import (
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// New returns a debug-level logger writing to t.Log.
func New(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: writer{t}, Level: hclog.Debug, DisableTime: true})
}

type writer struct{ t testing.TB }

func (w writer) Write(b []byte) (int, error) {
	// A goroutine of the code under test may log after its test ended,
	// when t.Log panics; that line is dropped.
	defer func() { _ = recover() }()
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
