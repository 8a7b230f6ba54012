package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pgwarden/pgwarden/internal/pgbouncerini"
)

// PgBouncer is a PgBouncer started by a test, its pgbouncer.ini ending
// with the %include of DatabasesFile (which pgwarden owns).
type PgBouncer struct {
	*Proc
	Port          int
	DatabasesFile string
}

// StartPgBouncer runs PgBouncer on port with its files in dir: trust
// auth, transaction pooling, an admin user "pgbouncer" and password as
// the postgres user's in its auth file. log names a file for its output
// ("" streams it to the test log). opts change its pgbouncer.ini (server
// TLS).
func StartPgBouncer(t testing.TB, dir string, port int, password, log string, opts ...func(*pgbouncerini.File)) *PgBouncer {
	t.Helper()
	b := &PgBouncer{Port: port, DatabasesFile: filepath.Join(dir, "pgbouncer-databases.ini")}
	users := filepath.Join(dir, "pgbouncer-users.txt")
	iniFile := filepath.Join(dir, "pgbouncer.ini")
	ini := pgbouncerini.File{ListenPort: port, SocketDir: dir, AuthType: "trust", AuthFile: users, DatabasesFile: b.DatabasesFile}
	for _, o := range opts {
		o(&ini)
	}
	files := map[string]string{
		b.DatabasesFile: "[databases]\n",
		users:           fmt.Sprintf("%q %q\n\"pgbouncer\" \"\"\n", "postgres", password),
		iniFile:         ini.Render(),
	}
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(LookPath(t, "pgbouncer", "pgbouncer"), iniFile)
	if log == "" {
		b.Proc = Start(t, "pgbouncer", cmd)
		return b
	}
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	cmd.Stdout = f
	b.Proc = StartQuiet(t, "pgbouncer", cmd)
	return b
}
