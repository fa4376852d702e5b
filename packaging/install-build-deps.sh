#!/bin/sh
# Installs the Debian packages sbx needs to build, test and run the demo. It installs only what
# is missing, and only as root; otherwise it names what to install and fails.
set -eu

packages="build-essential pkg-config git ca-certificates curl iproute2 procps python3 \
libjson-c-dev libyaml-dev libseccomp-dev libcurl4-openssl-dev libssl-dev \
check libsubunit-dev uidmap bubblewrap valgrind openssl python3-aiohttp python3-kubernetes \
python3-yaml python3-cryptography hyperfine nftables busybox \
debhelper devscripts lintian rpm systemd"

missing=""
for package in $packages; do
	if ! dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
		missing="$missing $package"
	fi
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "sbx: missing build dependencies:$missing" >&2
	echo "sbx: install them with: sudo apt-get install$missing" >&2
	exit 1
fi

echo "sbx: installing build dependencies:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null
