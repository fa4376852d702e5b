#!/bin/bash
# Runs the GitLab-shaped demo job (tests/demo/demo.py) against the sbx binaries in BUILD_DIR.
# Exits 0 only if the job behaved as expected. The test host's network namespace and every
# temporary file are removed on exit, also after a failure or Ctrl-C.
#
#   tests/demo/run-demo.sh BUILD_DIR
set -u

build=${1:?usage: run-demo.sh BUILD_DIR}
build=$(cd "$build" && pwd)
here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" -ne 0 ]; then
	echo "run-demo.sh: run as root (the demo creates a network namespace and sandboxes)" >&2
	exit 2
fi
for file in "$build/sbx" "$build/sbx-local.so"; do
	if [ ! -e "$file" ]; then
		echo "run-demo.sh: $file is missing; run make first" >&2
		exit 2
	fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/sbx-demo.XXXXXX")

# demo.py removes what it made; this is the backstop for a demo.py that was killed.
remove_leftovers() {
	local namespace veth
	if [ -s "$work/netns" ]; then
		read -r namespace veth <"$work/netns"
		ip link del "$veth" 2>/dev/null
		ip netns del "$namespace" 2>/dev/null
	fi
	rm -rf "$work"
}
trap remove_leftovers EXIT
trap 'exit 130' INT TERM

/usr/bin/python3 "$here/demo.py" "$build" "$work"
