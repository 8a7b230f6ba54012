package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"syscall"
)

// Every password of the file may instead come from a file beside it
// (password_file) or from one environment variable of a fixed list. There
// is no generic PGWARDEN_* mapping: the test harness and the CLI have
// variables of their own under that prefix, and a secret must come from
// where the operator put it, not from a name that happens to match.
//
// Precedence, so that no value is ever silently overridden:
//   - password and password_file both set: refused, naming the key;
//   - the variable is used only when the file sets neither; a file that
//     sets one while the variable is also set is refused too (the two
//     could differ, and which one wins would be a guess).
const (
	EnvSuperuserPassword   = "PGWARDEN_POSTGRES_SUPERUSER_PASSWORD"
	EnvReplicationPassword = "PGWARDEN_POSTGRES_REPLICATION_PASSWORD"
	EnvRESTAuthPassword    = "PGWARDEN_REST_AUTH_PASSWORD"
	EnvEtcdPassword        = "PGWARDEN_ETCD_PASSWORD"
)

// SecretEnv lists the variables a password may come from, in the order of
// the file.
var SecretEnv = []string{EnvEtcdPassword, EnvRESTAuthPassword, EnvSuperuserPassword, EnvReplicationPassword}

// hiddenEnv holds the secret variables HideSecretEnv took out of this
// process's environment.
var hiddenEnv sync.Map

// HideSecretEnv takes the secret variables out of this process's
// environment, keeping their values for its later loads (a SIGHUP
// re-read): the processes it starts afterwards do not inherit them.
// PostgreSQL is one: a role with pg_read_server_files could read the
// postmaster's /proc/self/environ; so are hooks, pgBackRest and pg_dump.
func HideSecretEnv() {
	for _, k := range SecretEnv {
		if v, ok := os.LookupEnv(k); ok {
			hiddenEnv.Store(k, v)
			os.Unsetenv(k)
		}
	}
}

// secretGetenv is os.Getenv, then what HideSecretEnv took.
func secretGetenv(k string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	if v, ok := hiddenEnv.Load(k); ok {
		return v.(string)
	}
	return ""
}

// maxSecretFile bounds what a secret file may hold: a password, not a
// file named by mistake.
const maxSecretFile = 64 << 10

// unreadable stands in for a secret whose file or variable was refused:
// its problem is already reported, and Validate must not report it again
// as missing. The configuration is never used: load returns the error.
const unreadable = "\x00unreadable"

// secret is one password of the configuration and where else it may come
// from.
type secret struct {
	key   string  // "postgres.superuser.password"
	value *string // the inline value, replaced by the resolved one
	file  string  // its password_file
	env   string
}

func (c *Config) secrets() []secret {
	s := []secret{
		{"etcd.password", &c.Etcd.Password, c.Etcd.PasswordFile, EnvEtcdPassword},
		{"postgres.superuser.password", &c.Postgres.Superuser.Password, c.Postgres.Superuser.PasswordFile, EnvSuperuserPassword},
		{"postgres.replication.password", &c.Postgres.Replication.Password, c.Postgres.Replication.PasswordFile, EnvReplicationPassword},
	}
	if a := c.REST.Auth; a != nil {
		s = append(s, secret{"rest.auth.password", &a.Password, a.PasswordFile, EnvRESTAuthPassword})
	}
	return s
}

// resolveSecrets fills each password from its file or variable, reporting
// every conflict and every file that cannot be used. The problems never
// hold a secret: only keys, paths and variable names.
func (c *Config) resolveSecrets(getenv func(string) string) Problems {
	var p Problems
	if c.REST.Auth == nil && getenv(EnvRESTAuthPassword) != "" {
		p.add("rest.auth", "", "%s is set but the file has no rest.auth (its username): add rest.auth or unset the variable", EnvRESTAuthPassword)
	}
	for _, s := range c.secrets() {
		fileKey := strings.TrimSuffix(s.key, "password") + "password_file"
		env := getenv(s.env)
		switch {
		case *s.value != "" && s.file != "":
			p.add(fileKey, s.file, "%s is set too: give one of password and password_file", s.key)
			*s.value = unreadable
		case (*s.value != "" || s.file != "") && env != "":
			p.add(s.key, s.env, "set in the file and in the environment: give one (the file's password or password_file, or %s)", s.env)
			*s.value = unreadable
		case s.file != "":
			v, err := ReadSecretFile(s.file)
			if err != nil {
				p.add(fileKey, s.file, "%v", err)
				v = unreadable
			}
			*s.value = v
		case env != "":
			*s.value = env
		}
	}
	return p
}

// ReadSecretFile reads a password file: a regular file that neither the
// group nor others may read (PrivateFile), one line (a trailing newline is
// not part of the secret), not empty. The errors do not repeat the path:
// the caller names it with its key.
func ReadSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		return "", fmt.Errorf("cannot read it: %w", pe.Err)
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("cannot read it: %w", err)
	}
	if err := PrivateFile(st); err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("cannot read it: %w", err)
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("larger than %d KiB: not a password file", maxSecretFile>>10)
	}
	v := strings.TrimRight(string(b), "\r\n")
	switch {
	case v == "":
		return "", errors.New("empty: it must hold the password")
	case strings.ContainsAny(v, "\r\n\x00"):
		return "", errors.New("more than one line: it must hold the password alone")
	}
	return v, nil
}

// PrivateFile refuses a secret file (a password, a private key) that is
// not a regular file or that the group or others may read or write: mode
// 0600 or 0400, or 0640 when root owns it (a key shared through a group by
// the system's certificate tooling), as PostgreSQL requires of its own
// ssl_key_file.
func PrivateFile(st fs.FileInfo) error {
	if !st.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	perm := st.Mode().Perm()
	rootOwned := false
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		rootOwned = sys.Uid == 0
	}
	if perm&0o077 == 0 || rootOwned && perm&0o037 == 0 {
		return nil
	}
	return fmt.Errorf("mode %04o lets the group or others read it: chmod 600 it (0640 only when root owns it)", perm)
}

// checkPrivateFile: a private key file that exists, is readable and has a
// private mode.
func checkPrivateFile(p *Problems, key, path string, required bool) {
	if path == "" {
		if required {
			p.add(key, path, "required")
		}
		return
	}
	st, err := os.Stat(path)
	if err != nil {
		p.add(key, path, "cannot read it: %v", err)
		return
	}
	if err := PrivateFile(st); err != nil {
		p.add(key, path, "%v", err)
	}
}
