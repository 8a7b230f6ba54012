#!/bin/sh
# Installs what the tests need, only what is missing: PostgreSQL 15,
# PgBouncer, HAProxy, etcd, pgBackRest, Chromium (the status page's test)
# and promtool (Debian's prometheus: the alert rules' check); wrk too with
# WITH_WRK=1.
set -eu
PG_BIN_DIR=${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}
missing=""
[ -x "$PG_BIN_DIR/postgres" ] || missing="$missing postgresql-15"
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing="$missing pgbouncer"
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing="$missing haproxy"
command -v etcd >/dev/null 2>&1 || missing="$missing etcd-server"
command -v pgbackrest >/dev/null 2>&1 || missing="$missing pgbackrest"
# promtool checks examples/prometheus-rules.yml (Debian ships it with the server).
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
# make bench also loads the REST API with wrk.
if [ "${WITH_WRK:-}" = 1 ]; then
	command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
fi
if [ -z "$missing" ]; then
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "missing:$missing; install them with: sudo apt-get install$missing" >&2
	exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packages' own services are not wanted: the tests start their own.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends $missing
