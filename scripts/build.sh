#!/bin/sh
# Builds pgwarden to $1 (default bin/pgwarden) with the demo's etcd
# embedded: cmd/demo-etcd is built first and compressed into
# cmd/pgwarden/demoetcd/etcd.gz, which the pgwarden binary embeds.
# LDFLAGS and GO come from the Makefile when it calls this.
set -eu
cd "$(dirname "$0")/.."
out=${1:-bin/pgwarden}
GO=${GO:-go}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$GO" build -trimpath -ldflags '-s -w' -o "$tmp/etcd" ./cmd/demo-etcd
# Written beside it under a name go:embed skips (a leading dot), then
# renamed into place: builds that run side by side (test packages, each
# building pgwarden) each see a whole file, never a temporary one.
gzip -6 -c "$tmp/etcd" > "cmd/pgwarden/demoetcd/.etcd.gz.$$"
mv "cmd/pgwarden/demoetcd/.etcd.gz.$$" cmd/pgwarden/demoetcd/etcd.gz
mkdir -p "$(dirname "$out")"
# Static (no cgo): libc and the dynamic loader would be 1.7 MiB of an
# idle agent's resident memory (and its watchdog's); the pure-Go os/user
# and resolver read /etc/passwd, /etc/hosts and DNS as they are.
# grpcnotrace: gRPC's request tracing (golang.org/x/net/trace, which
# pulls in html/template and registers /debug pages) is never turned on;
# without it the binary is 4.6 MB smaller, and an idle agent maps fewer
# of its pages.
CGO_ENABLED=0 "$GO" build -tags grpcnotrace -ldflags "${LDFLAGS:-}" -o "$out" ./cmd/pgwarden
