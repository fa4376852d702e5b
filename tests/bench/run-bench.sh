#!/bin/bash
# Runs the sbx benchmarks (tests/bench/bench.py) against the binaries in BUILD_DIR and writes
# docs/benchmarks.md. Takes about three minutes on an idle 2-core machine for the local backend
# and four for the Kubernetes client, and BENCH_QUICK=1 runs fewer repetitions.
# BENCH_ONLY=local or BENCH_ONLY=k8s runs one part and keeps the other part of the page. The
# GitLab jobs on the agent-sandbox backend (bench_agent_sandbox.py, about two minutes) run last,
# or alone with BENCH_ONLY=agent-sandbox, and write their own block at the end of the page. The
# test host's network namespace, the benchmark's sandbox, the fake Kubernetes API server with
# its pods and every temporary file are removed on exit, also after a failure or Ctrl-C.
#
#   [BENCH_ONLY=all|local|k8s|agent-sandbox] [BENCH_QUICK=1] tests/bench/run-bench.sh BUILD_DIR
set -u

build=${1:?usage: run-bench.sh BUILD_DIR}
build=$(cd "$build" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
report=$(cd "$here/../.." && pwd)/docs/benchmarks.md

only=${BENCH_ONLY:-all}
case "$only" in
all | local | k8s | agent-sandbox) ;;
*)
	echo "run-bench.sh: BENCH_ONLY=\"$only\" is invalid; use all, local, k8s or agent-sandbox" >&2
	exit 2
	;;
esac

if [ "$(id -u)" -ne 0 ]; then
	echo "run-bench.sh: run as root (the benchmarks create sandboxes, pods and network" \
		"namespaces)" >&2
	exit 2
fi
files=() tools=(curl ip)
[ "$only" != k8s ] && files+=("$build/sbx" "$build/sbx-local.so") && tools+=(bwrap)
[ "$only" != local ] && files+=("$build/tests/tools/k8s_client_tool") && tools+=(unshare nsenter)
[ "$only" = all ] || [ "$only" = agent-sandbox ] && files+=("$build/sbx-agent-sandbox.so") &&
	tools+=(nft)
for file in "${files[@]}"; do
	if [ ! -e "$file" ]; then
		echo "run-bench.sh: $file is missing; run make first (make bench builds it)" >&2
		exit 2
	fi
done
for tool in "${tools[@]}"; do
	if ! command -v "$tool" >/dev/null; then
		echo "run-bench.sh: $tool is missing; run make deps" >&2
		exit 2
	fi
done

mkdir -p "$build/bench"
${CC:-cc} -O2 -g -std=gnu11 -Wall -Wextra -D_GNU_SOURCE -o "$build/bench/measure" \
	"$here/measure.c" || exit 2
${CC:-cc} -O2 -g -std=gnu11 -Wall -Wextra -D_GNU_SOURCE -shared -fPIC \
	-o "$build/bench/phases.so" "$here/phases.c" -ldl || exit 2

work=$(mktemp -d "${TMPDIR:-/tmp}/sbx-bench.XXXXXX")
chmod 0755 "$work"

# Stops the fake API server whose state directory is $1 (default: the one of bench_k8s.py), by
# the pid in its cluster.json. On SIGTERM it kills its pods and removes its network namespaces.
stop_fake_cluster() {
	local dir=${1:-$work/k8s/cluster} pid namespace i
	[ -s "$dir/cluster.json" ] || return 0
	pid=$(sed -n 's/^ *"pid": \([0-9]*\),$/\1/p' "$dir/cluster.json")
	[ -n "$pid" ] || return 0
	grep -qs fake-apiserver "/proc/$pid/cmdline" || return 0
	kill -TERM "$pid"
	for i in $(seq 50); do
		[ -e "/proc/$pid" ] || break
		sleep 0.2
	done
	# Pod processes die with a killed server, but its network namespaces stay behind.
	if [ -e "/proc/$pid" ]; then
		kill -KILL "$pid"
		sleep 0.5
	fi
	for namespace in $(ip netns list | sed -n "s/^\(sbxk-$pid-[^ ]*\).*/\1/p"); do
		ip netns del "$namespace" 2>/dev/null
	done
}

# The backstop for a killed bench_agent_sandbox.py: its fake cluster, and the network namespaces
# of its test hosts (sbxt-<its pid>-<n>) with their servers.
remove_agent_sandbox_leftovers() {
	local namespace
	stop_fake_cluster "$work/agent-sandbox/cluster"
	[ -n "${agent_sandbox_pid:-}" ] || return 0
	for namespace in $(ip netns list | sed -n "s/^\(sbxt-$agent_sandbox_pid-[^ ]*\).*/\1/p"); do
		ip netns pids "$namespace" | xargs -r kill -KILL
		ip netns del "$namespace" 2>/dev/null
	done
}

# bench.py removes what it made, and this is the backstop for a bench.py that was killed.
remove_leftovers() {
	local namespace veth entry
	stop_fake_cluster
	remove_agent_sandbox_leftovers
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
status=0 bench=
# bash runs a trap only after the foreground command ends, so bench.py runs in the background
# and gets the signal passed on. On SIGTERM it removes its sandbox, test host and fake cluster.
trap 'kill -TERM "$bench" 2>/dev/null; wait "$bench"; exit 130' INT TERM
if [ "$only" != agent-sandbox ]; then
	# bench.py rewrites the page without the agent-sandbox block, which is put back below.
	/usr/bin/python3 "$here/bench_agent_sandbox.py" --save "$work/agent-sandbox.md" "$report"
	/usr/bin/python3 "$here/bench.py" "${quick[@]}" --only "$only" "$build" "$work" "$report" &
	bench=$!
	wait "$bench" || status=$?
fi
if [ "$only" = all ] || [ "$only" = agent-sandbox ]; then
	/usr/bin/python3 "$here/bench_agent_sandbox.py" "${quick[@]}" "$build" "$work" "$report" &
	bench=$! agent_sandbox_pid=$!
	wait "$bench" || status=$?
else
	/usr/bin/python3 "$here/bench_agent_sandbox.py" --keep "$work/agent-sandbox.md" "$report"
fi
exit "$status"
