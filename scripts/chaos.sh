#!/bin/sh
# make chaos: the fault campaign at length (integration/chaos). Prints the
# fault log and the table, writes bin/chaos.log and bin/chaos.json, and ends
# with the line scripts read:
#   chaos: F faults, V violations, L acknowledged rows lost, S seed
set -u
cd "$(dirname "$0")/.."
GO=${GO:-go}
mkdir -p bin
log=bin/chaos.log
sync=false
[ "${SYNC:-0}" = 1 ] && sync=true
start=$(date +%s)
PGWARDEN_PLANT_BIN=${PGWARDEN_PLANT_BIN:-unused} $GO test -tags integration -count=1 -timeout 600m -run '^TestChaos$' -v ./integration/chaos \
	-chaos.faults="${FAULTS:-100}" -chaos.seed="${SEED:-0}" -chaos.sync=$sync -chaos.ttl="${TTL:-10}" \
	${KINDS:+-chaos.kinds="$KINDS"} >"$log" 2>&1
rc=$?
grep -E 'chaos: (seed|cluster|fault|campaign)' "$log" | sed 's/^ *//'
sed -n '/fault  *count  *max unavail/,/^ *acknowledged /p' "$log" | sed 's/^        //'
grep -E '^ *VIOLATION' "$log" | sed 's/^ *//'
grep -E '^ *chaos-json: ' "$log" | tail -1 | sed 's/^ *chaos-json: //' >bin/chaos.json
echo "log: $log, report: bin/chaos.json, took $(( $(date +%s) - start )) s, go test exit $rc"
last=$(grep -E '^ *chaos: [0-9]+ faults' "$log" | tail -1 | sed 's/^ *//')
if [ -z "$last" ]; then
	tail -40 "$log"
	echo "chaos: 0 faults, 1 violations, 0 acknowledged rows lost, ${SEED:-0} seed"
	exit 1
fi
echo "$last"
exit $rc
