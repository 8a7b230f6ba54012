package hooks

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/internal/testlog"
)

func TestSplit(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"notify %n %e", []string{"notify", "%n", "%e"}},
		{"/usr/local/bin/notify %n %e %s %t '%d'", []string{"/usr/local/bin/notify", "%n", "%e", "%s", "%t", "%d"}},
		{`a "b c" 'd "e"'`, []string{"a", "b c", `d "e"`}},
		{`x"y z"w`, []string{"xy zw"}},
		{`"a \"q\" b"`, []string{`a "q" b`}},
		{"  spaced   out  ", []string{"spaced", "out"}},
	}
	for _, c := range cases {
		got, err := Split(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("Split(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"a 'b", `a "b`} {
		if _, err := Split(bad); err == nil {
			t.Errorf("Split(%q): no error for unterminated quote", bad)
		}
	}
}

func TestExpandCannotInject(t *testing.T) {
	r, err := New("notify %n %e %s '%d' 100%%", nil, "node1", time.Second, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	got := r.Expand("promote", true, "x'; rm -rf / #")
	want := []string{"notify", "node1", "promote", "1", "x'; rm -rf / #", "100%"}
	if !slices.Equal(got, want) {
		t.Fatalf("Expand = %q, want %q", got, want)
	}
}

func TestFireRunsFilteredEvents(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "events")
	script := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1 $2 $3 $4\" >> "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := New(script+" %n %e %s %d", []string{"promote", "demote"}, "n1", 5*time.Second, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	r.Fire("promote", true, "ok")
	r.Fire("follow", true, "not wanted")
	r.Fire("demote", false, "lost")
	r.Wait()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	slices.Sort(lines)
	want := []string{"n1 demote 0 lost", "n1 promote 1 ok"}
	if !slices.Equal(lines, want) {
		t.Fatalf("hook ran with %q, want %q", lines, want)
	}
}

func TestFireTimesOut(t *testing.T) {
	r, err := New("sleep 30", nil, "n1", 100*time.Millisecond, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r.Fire("promote", true, "")
	r.Wait()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("hook not stopped by its timeout: ran %s", d)
	}
}

// TestSetReplacesCommand: a runner made without a command fires nothing;
// Set (SIGHUP) gives it one with its events, and a bad command keeps the
// one it had.
func TestSetReplacesCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "events")
	script := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1\" >> "+out+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := New("", nil, "n1", time.Second, testlog.New(t))
	if err != nil {
		t.Fatal(err)
	}
	r.Fire("promote", true, "")
	if err := r.Set(script+" %e", []string{"demote"}, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := r.Set("a 'b", nil, time.Second); err == nil || !strings.Contains(err.Error(), "hooks.event_command") {
		t.Fatalf("Set with an unterminated quote: %v, want an error naming hooks.event_command", err)
	}
	r.Fire("promote", true, "")
	r.Fire("demote", true, "")
	r.Wait()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "demote" {
		t.Fatalf("hook ran for %q, want only demote", got)
	}
}
