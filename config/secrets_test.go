package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const superLine = "  superuser: {username: postgres, password: a}"

func writeSecret(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

// TestSecretsFromFilesAndEnvironment: each password comes from its
// password_file (the trailing newline is not part of it) or, when the file
// sets neither, from its variable of the fixed list.
func TestSecretsFromFilesAndEnvironment(t *testing.T) {
	dir := t.TempDir()
	su := writeSecret(t, dir, "su.pass", "from-file\n", 0o600)
	et := writeSecret(t, dir, "etcd.pass", "etcd-secret\r\n", 0o400)
	cfg := strings.Replace(base(t), superLine, "  superuser: {username: postgres, password_file: "+su+"}", 1)
	cfg = strings.Replace(cfg, "  replication: {username: replicator, password: b}", "  replication: {username: replicator}", 1)
	cfg = strings.Replace(cfg, "etcd:\n", "etcd:\n  username: agent\n  password_file: "+et+"\n", 1)
	cfg = strings.Replace(cfg, "  listen: 127.0.0.1:8008\n", "  listen: 127.0.0.1:8008\n  auth: {username: admin}\n", 1)
	t.Setenv(EnvReplicationPassword, "from-env")
	t.Setenv(EnvRESTAuthPassword, "rest-env")
	c, err := parse(cfg)
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	if c.Postgres.Superuser.Password != "from-file" || c.Postgres.Replication.Password != "from-env" ||
		c.Etcd.Password != "etcd-secret" || c.REST.Auth.Password != "rest-env" {
		t.Fatalf("resolved: superuser %q replication %q etcd %q rest %q", c.Postgres.Superuser.Password,
			c.Postgres.Replication.Password, c.Etcd.Password, c.REST.Auth.Password)
	}
}

// TestSecretsRefused: a secret file that is missing, readable by others,
// empty or more than a password, a password given twice, or a variable
// beside a value of the file, is refused in one line naming the key (and
// the file or variable), never showing a secret.
func TestSecretsRefused(t *testing.T) {
	dir := t.TempDir()
	good := writeSecret(t, dir, "good.pass", "s3cret-in-file\n", 0o600)
	open := writeSecret(t, dir, "open.pass", "s3cret-in-file\n", 0o644)
	groupW := writeSecret(t, dir, "groupw.pass", "s3cret-in-file\n", 0o620)
	empty := writeSecret(t, dir, "empty.pass", "\n", 0o600)
	twoLines := writeSecret(t, dir, "two.pass", "s3cret-in-file\nmore\n", 0o600)
	openKey := writeSecret(t, dir, "etcd.key", "-----BEGIN PRIVATE KEY-----\n", 0o644)
	su := func(fields string) func(string) string {
		return func(c string) string {
			return strings.Replace(c, superLine, "  superuser: {username: postgres, "+fields+"}", 1)
		}
	}
	cases := []struct {
		name string
		edit func(string) string
		env  map[string]string
		want []string
	}{
		{"missing file", su("password_file: " + dir + "/nope"), nil,
			[]string{`postgres.superuser.password_file: "` + dir + `/nope": cannot read it: no such file`}},
		{"world readable", su("password_file: " + open), nil,
			[]string{`postgres.superuser.password_file: "` + open + `"`, "mode 0644", "chmod 600"}},
		{"group writable", su("password_file: " + groupW), nil,
			[]string{`postgres.superuser.password_file: "` + groupW + `"`, "mode 0620"}},
		{"empty file", su("password_file: " + empty), nil,
			[]string{`postgres.superuser.password_file: "` + empty + `": empty`}},
		{"two lines", su("password_file: " + twoLines), nil,
			[]string{"postgres.superuser.password_file: ", "more than one line"}},
		{"inline and file", su("password: inline-s3cret, password_file: " + good), nil,
			[]string{`postgres.superuser.password_file: "` + good + `": postgres.superuser.password is set too`}},
		{"file and variable", su("password_file: " + good), map[string]string{EnvSuperuserPassword: "env-s3cret"},
			[]string{`postgres.superuser.password: "` + EnvSuperuserPassword + `": set in the file and in the environment`}},
		{"inline and variable", func(c string) string { return c }, map[string]string{EnvReplicationPassword: "env-s3cret"},
			[]string{`postgres.replication.password: "` + EnvReplicationPassword + `"`}},
		{"rest variable without rest.auth", func(c string) string { return c }, map[string]string{EnvRESTAuthPassword: "env-s3cret"},
			[]string{"rest.auth: ", EnvRESTAuthPassword + " is set but the file has no rest.auth"}},
		{"etcd file without username", func(c string) string {
			return strings.Replace(c, "etcd:\n", "etcd:\n  password_file: "+good+"\n", 1)
		}, nil, []string{"etcd.username: ", "go together"}},
		{"etcd key readable by others", func(c string) string {
			return strings.Replace(c, "etcd:\n", "etcd:\n  tls: {key: "+openKey+", cert: "+good+"}\n", 1)
		}, nil, []string{`etcd.tls.key: "` + openKey + `": mode 0644`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := parse(tc.edit(base(t)))
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("more than one line:\n%s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if strings.Contains(msg, "s3cret") {
				t.Errorf("error shows a secret: %q", msg)
			}
		})
	}
}

// TestHideSecretEnv: the variables leave the environment (children do not
// inherit them) and a later load still finds them.
func TestHideSecretEnv(t *testing.T) {
	t.Setenv(EnvReplicationPassword, "hidden-s3cret")
	t.Cleanup(func() { hiddenEnv.Delete(EnvReplicationPassword) })
	HideSecretEnv()
	if _, ok := os.LookupEnv(EnvReplicationPassword); ok {
		t.Fatalf("%s still in the environment", EnvReplicationPassword)
	}
	cfg := strings.Replace(base(t), "  replication: {username: replicator, password: b}", "  replication: {username: replicator}", 1)
	c, err := parse(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.Postgres.Replication.Password != "hidden-s3cret" {
		t.Fatalf("replication password %q after HideSecretEnv", c.Postgres.Replication.Password)
	}
}
