#!/bin/bash
# Runs the sbx benchmarks (tests/bench/bench.py) against the binaries in BUILD_DIR and writes
# docs/benchmarks.md. Takes about three minutes on an idle 2-core machine, and BENCH_QUICK=1
# runs fewer repetitions. The test host's network namespace, the benchmark's sandbox and every temporary
# file are removed on exit, also after a failure or Ctrl-C.
#
#   tests/bench/run-bench.sh BUILD_DIR
set -u

build=${1:?usage: run-bench.sh BUILD_DIR}
build=$(cd "$build" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
report=$(cd "$here/../.." && pwd)/docs/benchmarks.md

if [ "$(id -u)" -ne 0 ]; then
	echo "run-bench.sh: run as root (the benchmarks create sandboxes and a network namespace)" >&2
	exit 2
fi
for file in "$build/sbx" "$build/sbx-local.so"; do
	if [ ! -e "$file" ]; then
		echo "run-bench.sh: $file is missing; run make first" >&2
		exit 2
	fi
done
for tool in bwrap curl ip; do
	if ! command -v "$tool" >/dev/null; then
		echo "run-bench.sh: $tool is missing; run make deps" >&2
		exit 2
	fi
done

mkdir -p "$build/bench"
${CC:-cc} -O2 -g -std=gnu11 -Wall -Wextra -D_GNU_SOURCE -o "$build/bench/measure" \
	"$here/measure.c" || exit 2

work=$(mktemp -d "${TMPDIR:-/tmp}/sbx-bench.XXXXXX")
chmod 0755 "$work"

# bench.py removes what it made, and this is the backstop for a bench.py that was killed.
remove_leftovers() {
	local namespace veth entry
	if [ -s "$work/netns" ]; then
		read -r namespace veth <"$work/netns"
		ip link del "$veth" 2>/dev/null
		ip netns del "$namespace" 2>/dev/null
	fi
	for entry in "$work"/state/sandboxes/*.json; do
		[ -e "$entry" ] || continue
		SBX_CONFIG="$work/sbx.yaml" SBX_PLUGIN_DIR="$build" \
			SBX_SANDBOX_ID=$(basename "$entry" .json) \
			"$build/sbx" gitlab cleanup >/dev/null 2>&1
	done
	rm -rf "$work"
}
trap remove_leftovers EXIT

quick=()
[ "${BENCH_QUICK:-0}" = 1 ] && quick=(--quick)
/usr/bin/python3 "$here/bench.py" "${quick[@]}" "$build" "$work" "$report" &
bench=$!
# bash runs a trap only after the foreground command ends, so bench.py runs in the background
# and gets the signal passed on; it removes its sandbox and test host on SIGTERM.
trap 'kill -TERM "$bench" 2>/dev/null; wait "$bench"; exit 130' INT TERM
wait "$bench"
