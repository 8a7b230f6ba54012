#!/bin/sh
# make bench: runs the benchmarks against a real cluster, shows their
# output live (without the processes' own logs, kept in bin/bench.txt),
# then a table of the figures; bin/bench.json holds them too.
set -u
mkdir -p bin
rcfile=$(mktemp)
{ ${GO:-go} test -tags integration -count=1 -timeout 60m -run '^$' -bench . -benchtime 1x ./integration/ 2>&1; echo $? > "$rcfile"; } |
	tee bin/bench.txt | grep -v -e '^BENCH_JSON ' -e 'harness.go:[0-9]*: ' -e '^--- BENCH: ' -e 'output truncated'
rc=$(cat "$rcfile"); rm -f "$rcfile"
grep '^BENCH_JSON ' bin/bench.txt | tail -1 | cut -d' ' -f2- > bin/bench.json
echo
printf '%-34s %12s  %s\n' FIGURE VALUE UNIT
grep -E '^[a-z0-9_]+ [0-9.]+ [A-Za-z/-]+$' bin/bench.txt | awk '{ printf "%-34s %12s  %s\n", $1, $2, $3 }'
echo "(bin/bench.txt: full output; bin/bench.json: the figures)"
exit "$rc"
