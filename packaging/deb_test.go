//go:build integration

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgwarden/pgwarden/integration/harness"
)

// TestDebInstalls builds the .deb as `make deb` does, installs it with
// dpkg on this machine, runs the installed pgwarden, checks the installed
// unit with systemd-analyze verify and the completion and man page, and
// removes the package. It needs root (dpkg), and runs as root: it is not
// one of the harness's tests that re-run as the postgres user.
func TestDebInstalls(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the .deb install test runs dpkg -i: run it as root")
	}
	dpkg := harness.LookPath(t, "dpkg", "dpkg")
	analyze := harness.LookPath(t, "systemd-analyze", "systemd")
	if _, err := os.Stat("/usr/bin/pgwarden"); err == nil {
		if out, err := exec.Command("dpkg", "-S", "/usr/bin/pgwarden").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "pgwarden:") {
			t.Fatalf("/usr/bin/pgwarden exists and is not this package's: refusing to overwrite it (%s)", out)
		}
	}
	root := harness.ModuleRoot()
	vb, err := os.ReadFile(filepath.Join(root, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(string(vb))
	// The files `make build docs` leaves in bin/, staged in a directory of
	// the test's own (nfpm.yaml's paths are relative to the repository).
	stage := t.TempDir()
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	bin := filepath.Join(stage, "bin")
	must(t, os.MkdirAll(bin, 0o755))
	run("go", "build", "-ldflags", "-X main.version="+version, "-o", filepath.Join(bin, "pgwarden"), "./cmd/pgwarden")
	for file, args := range map[string][]string{"pgwarden.bash": {"completion", "bash"}, "_pgwarden": {"completion", "zsh"}, "pgwarden.1": {"man"}} {
		must(t, os.WriteFile(filepath.Join(bin, file), []byte(run(filepath.Join(bin, "pgwarden"), args...)), 0o644))
	}
	run("gzip", "-9nf", "-k", filepath.Join(bin, "pgwarden.1"))
	must(t, os.Symlink(filepath.Join(root, "examples"), filepath.Join(stage, "examples")))
	t.Chdir(stage)
	deb, err := buildDeb(filepath.Join(root, "packaging", "nfpm.yaml"), version, stage)
	if err != nil {
		t.Fatalf("build the .deb: %v", err)
	}

	if out, err := exec.Command(dpkg, "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i %s: %v\n%s", deb, err, out)
	}
	removed := false
	t.Cleanup(func() {
		if !removed {
			_ = exec.Command(dpkg, "-P", "pgwarden").Run()
		}
	})
	out, err := exec.Command("/usr/bin/pgwarden", "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "pgwarden "+version+"\n") {
		t.Fatalf("installed pgwarden version: %v\n%s", err, out)
	}
	unit := "/lib/systemd/system/pgwarden@.service"
	if out, err := exec.Command(analyze, "verify", unit).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
	b, err := os.ReadFile(unit)
	must(t, err)
	for _, want := range []string{"Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/pgwarden", "ProtectHome=yes", "PrivateTmp=yes",
		"ExecReload=/bin/kill -HUP $MAINPID", "ExecStart=/usr/bin/pgwarden agent -c /etc/pgwarden/%i.yaml"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the installed unit lacks %q", want)
		}
	}
	if out, err := exec.Command("bash", "-c", "source /usr/share/bash-completion/completions/pgwarden && complete -p pgwarden").CombinedOutput(); err != nil || !strings.Contains(string(out), "_pgwarden") {
		t.Errorf("bash completion: %v %s", err, out)
	}
	if out, err := exec.Command("man", "-w", "pgwarden").CombinedOutput(); err != nil || !strings.Contains(string(out), "/usr/share/man/man1/pgwarden.1.gz") {
		t.Errorf("man -w pgwarden: %v %s", err, out)
	}
	if _, err := os.Stat("/etc/pgwarden/node.yaml.example"); err != nil {
		t.Errorf("example configuration: %v", err)
	}

	if out, err := exec.Command(dpkg, "-P", "pgwarden").CombinedOutput(); err != nil {
		t.Fatalf("dpkg -P pgwarden: %v\n%s", err, out)
	}
	removed = true
	for _, f := range []string{"/usr/bin/pgwarden", unit, "/etc/pgwarden/node.yaml.example"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s is still there after dpkg -P", f)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
