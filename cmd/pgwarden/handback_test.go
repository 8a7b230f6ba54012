package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestHandbackLeaseOnStdin: the hand-back takes the dead agent's lease on
// its stdin (a command line is public to the host); a missing or bad
// lease is a usage error naming what was wrong, before any file or etcd
// is touched.
func TestHandbackLeaseOnStdin(t *testing.T) {
	for _, c := range []struct{ stdin, want string }{
		{"", `want "lease HEX"`},
		{"lease zz\n", `lease "zz": want the agent's etcd lease ID in hex`},
		{"lease 0\n", `lease "0"`},
	} {
		var out bytes.Buffer
		e := &env{stdin: strings.NewReader(c.stdin), stdout: &out, stderr: &out, ctx: context.Background()}
		err := cmdHandback(e, []string{"-c", "/nonexistent/pgwarden.yaml"})
		if err == nil || !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("stdin %q: %v, want a usage error with %q", c.stdin, err, c.want)
		}
	}
}
