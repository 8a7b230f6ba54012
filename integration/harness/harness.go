// Package harness starts and stops the real processes that integration tests
// need (etcd, PostgreSQL, PgBouncer, HAProxy, pgwarden agents) on loopback
// ports in temporary directories, and stops them by PID.
//
// PostgreSQL refuses to run as root, so Main re-executes a test binary that
// was started as root under an unprivileged OS user (PGWARDEN_TEST_USER,
// default "postgres"); everything the tests start then runs as that user.
package harness

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgwarden/pgwarden/internal/freeport"
	"github.com/pgwarden/pgwarden/internal/proc"
)

const childEnv = "PGWARDEN_TEST_CHILD"

// Option changes what Main prepares.
type Option int

const (
	// WithBinary builds bin/pgwarden for the tests; its path is in Binary().
	WithBinary Option = iota + 1
	// WithScreenshots makes bin/screenshots writable by the test user
	// (tests run as root re-run unprivileged); its path is Screenshots().
	WithScreenshots
)

// Main runs the tests of a package that starts real processes. Call it from
// TestMain: os.Exit(harness.Main(m)).
func Main(m *testing.M, opts ...Option) int {
	build := false
	for _, o := range opts {
		switch o {
		case WithBinary:
			build = true
		case WithScreenshots:
			if err := screenshotsDir(); err != nil {
				fmt.Fprintln(os.Stderr, "harness:", err)
				return 2
			}
		}
	}
	if build && os.Getenv("PGWARDEN_BIN") == "" {
		dir, err := os.MkdirTemp("", "pgwarden-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "harness:", err)
			return 2
		}
		defer os.RemoveAll(dir)
		if err := os.Chmod(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "harness:", err)
			return 2
		}
		bin := filepath.Join(dir, "pgwarden")
		// As `make build` does: with the demo's etcd embedded.
		cmd := exec.Command("sh", "scripts/build.sh", bin)
		cmd.Dir = ModuleRoot()
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "harness: build pgwarden:", err)
			return 2
		}
		os.Setenv("PGWARDEN_BIN", bin)
	}
	if os.Geteuid() != 0 || os.Getenv(childEnv) != "" {
		return m.Run()
	}
	code, err := reexec()
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 2
	}
	return code
}

// Screenshots is where tests save screenshots (bin/screenshots).
func Screenshots() string { return filepath.Join(ModuleRoot(), "bin", "screenshots") }

// screenshotsDir creates Screenshots(), writable by whoever runs the
// tests (root creates it before re-running them as the test user).
func screenshotsDir() error {
	d := Screenshots()
	if err := os.MkdirAll(d, 0o755); err != nil {
		return fmt.Errorf("screenshots: %w", err)
	}
	if os.Geteuid() == 0 {
		// Sticky and world-writable, like /tmp: the test user writes its
		// files, and cannot remove root's.
		if err := os.Chmod(d, 0o777|os.ModeSticky); err != nil {
			return fmt.Errorf("screenshots: %w", err)
		}
	}
	return nil
}

// reexec runs this test binary again as the unprivileged test user.
func reexec() (int, error) {
	name := os.Getenv("PGWARDEN_TEST_USER")
	if name == "" {
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, fmt.Errorf("tests run as root must run PostgreSQL as an unprivileged user: user %q not found (install postgresql-15, which creates it, or set PGWARDEN_TEST_USER)", name)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	top, err := os.MkdirTemp("", "pgwarden-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(top)
	for _, d := range []string{top, filepath.Join(top, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 0, err
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return 0, err
		}
	}
	if err := os.Chmod(top, 0o755); err != nil {
		return 0, err
	}
	exe := filepath.Join(top, "test.bin")
	if err := copyFile(os.Args[0], exe, 0o755); err != nil {
		return 0, fmt.Errorf("copy test binary: %w", err)
	}
	var args []string
	for _, a := range os.Args[1:] {
		// Files go test asks the binary to write live in root's build dir.
		if strings.HasPrefix(a, "-test.testlogfile") || strings.HasPrefix(a, "-test.gocoverdir") ||
			strings.HasPrefix(a, "-test.coverprofile") {
			continue
		}
		args = append(args, a)
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), childEnv+"=1", "TMPDIR="+filepath.Join(top, "tmp"), "HOME="+top, "USER="+name)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start tests as %s: %w", name, err)
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ModuleRoot is the directory holding go.mod.
func ModuleRoot() string {
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// Binary is the pgwarden binary built by Main(m, WithBinary).
func Binary(t testing.TB) string {
	t.Helper()
	b := os.Getenv("PGWARDEN_BIN")
	if b == "" {
		t.Fatal("no pgwarden binary: call harness.Main(m, harness.WithBinary) from TestMain")
	}
	return b
}

// PgBinDir is where PostgreSQL 15's programs are; it fails the test, saying
// what to install, when they are missing.
func PgBinDir(t testing.TB) string {
	t.Helper()
	d := os.Getenv("PG_BIN_DIR")
	if d == "" {
		d = "/usr/lib/postgresql/15/bin"
	}
	if _, err := os.Stat(filepath.Join(d, "postgres")); err != nil {
		t.Fatalf("PostgreSQL 15 not found in %s: apt-get install postgresql-15 (or set PG_BIN_DIR)", d)
	}
	return d
}

// LookPath finds a program or fails the test saying which package to install.
func LookPath(t testing.TB, prog, pkg string) string {
	t.Helper()
	for _, p := range []string{prog, "/usr/sbin/" + prog, "/usr/bin/" + prog} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatalf("%s not found: apt-get install %s", prog, pkg)
	return ""
}

// Port returns a free loopback TCP port below the kernel's ephemeral range
// (internal/freeport), failing the test when there is none.
func Port(t testing.TB) int {
	t.Helper()
	p, err := freeport.Pick()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// WaitFor polls cond until it returns true or the timeout passes; it fails
// the test with desc and the last error then.
func WaitFor(t testing.TB, timeout time.Duration, desc string, cond func() (bool, error)) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", desc, err)
	}
}

// Poll is WaitFor returning an error instead of failing a test.
func Poll(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last == nil {
				last = errors.New("condition not met")
			}
			return fmt.Errorf("after %s: %w", timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Proc is a process started by a test.
type Proc struct {
	*proc.Proc
	t testing.TB
}

// Start runs cmd, streams its output to t.Logf prefixed with name, and
// registers a cleanup that kills it (by PID) if the test did not stop it.
func Start(t testing.TB, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	return start(t, name, cmd, true)
}

// StartQuiet is Start for a process whose output goes only where
// cmd.Stdout points (a file: a campaign of hours would fill the test log).
func StartQuiet(t testing.TB, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	return start(t, name, cmd, false)
}

func start(t testing.TB, name string, cmd *exec.Cmd, toLog bool) *Proc {
	t.Helper()
	pr, pw := io.Pipe()
	// Output also goes where the caller pointed it (a test reading lines).
	var out io.Writer = pw
	if cmd.Stdout != nil {
		out = io.MultiWriter(pw, cmd.Stdout)
	}
	if !toLog {
		out = cmd.Stdout
		pw.Close()
	}
	cmd.Stdout, cmd.Stderr = out, out
	var logDone sync.WaitGroup
	logDone.Add(1)
	pp, err := proc.Start(name, cmd, func() {
		pw.Close()
		logDone.Wait()
	})
	if err != nil {
		pw.Close()
		t.Fatal(err)
	}
	go func() {
		defer logDone.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			logf(t, "%s: %s", name, sc.Text())
		}
	}()
	p := &Proc{Proc: pp, t: t}
	t.Cleanup(func() {
		p.Kill()
		p.Wait(10 * time.Second)
	})
	return p
}

// logf logs, and drops the line if the test has already completed (t.Logf
// panics then): a process can print after its test gave up waiting for it.
func logf(t testing.TB, format string, args ...any) {
	defer func() { _ = recover() }()
	t.Logf(format, args...)
}

// Dir makes a fresh directory for one process under the test's temp dir.
func Dir(t testing.TB, name string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

// Tail is the last max bytes of a file (a process's log, for a failure's
// reader), or the error that kept it from being read.
func Tail(path string, max int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
