package pgbouncerini

import (
	"os"
	"strings"
	"testing"
)

// TestExampleIniHoldsRender: examples/pgbouncer.ini, which operators copy,
// holds every setting the harness and the demo run PgBouncer with (Render
// for the example's paths), and ends with the same %include.
func TestExampleIniHoldsRender(t *testing.T) {
	b, err := os.ReadFile("../../examples/pgbouncer.ini")
	if err != nil {
		t.Fatal(err)
	}
	example := strings.Split(strings.TrimSpace(string(b)), "\n")
	render := File{ListenPort: 16432, SocketDir: "/var/lib/pgwarden", AuthType: "scram-sha-256",
		AuthFile: "/etc/pgbouncer/userlist.txt", DatabasesFile: "/etc/pgbouncer/pgwarden.ini"}.Render()
	lines := strings.Split(strings.TrimSpace(render), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, ";") {
			continue
		}
		found := false
		for _, e := range example {
			found = found || e == l
		}
		if !found {
			t.Errorf("examples/pgbouncer.ini lacks %q", l)
		}
	}
	if last := lines[len(lines)-1]; example[len(example)-1] != last {
		t.Errorf("examples/pgbouncer.ini ends with %q, Render with %q", example[len(example)-1], last)
	}
}
