package main

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/pgwarden/pgwarden/config"
)

// sealEnviron makes this process's /proc/PID files readable by root only
// when its environment held a secret. Unsetenv changes only the Go copy:
// the kernel keeps the environment the process started with in
// /proc/PID/environ, readable by any process of the same OS user, and
// PostgreSQL runs as that user (a role with pg_read_server_files reads
// files as it). A process that is not dumpable has its /proc entries
// owned by root; it also writes no core file, which would hold the same
// secrets.
func sealEnviron(hadSecret bool) {
	if !hadSecret {
		return
	}
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}

// environHasSecret says whether one of the secret variables is set here.
func environHasSecret() bool {
	for _, k := range config.SecretEnv {
		if _, ok := os.LookupEnv(k); ok {
			return true
		}
	}
	return false
}
