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
gzip -6 -c "$tmp/etcd" > "cmd/pgwarden/demoetcd/etcd.gz.$$"
# Renamed into place: builds that run side by side (test packages) each
# write a whole file.
mv "cmd/pgwarden/demoetcd/etcd.gz.$$" cmd/pgwarden/demoetcd/etcd.gz
mkdir -p "$(dirname "$out")"
"$GO" build -ldflags "${LDFLAGS:-}" -o "$out" ./cmd/pgwarden
