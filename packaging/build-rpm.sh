#!/bin/sh
# Builds the RPM packages sbx, sbx-agent-sandbox and sbx-devel from this checkout with
# `rpmbuild -bb` and leaves them in build/packages/rpm/. The tarball sbx-VERSION.tar.gz holds the
# files git knows plus untracked files that .gitignore does not exclude (without git: the tree
# without build/ and .git/).
#
#   packaging/build-rpm.sh [RPMBUILD_OPTION...]
#
# On a host whose RPM database does not list the build dependencies (Debian with its rpm
# package), pass --nodeps; pkg-config finds the Debian libraries all the same.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
out="$top/build/packages/rpm"

if ! command -v rpmbuild >/dev/null 2>&1; then
	echo "build-rpm.sh: rpmbuild is missing; install rpm-build (Fedora) or rpm (Debian)" >&2
	exit 1
fi

version=$(sed -n 's/^VERSION := //p' "$top/Makefile")
spec_version=$(sed -n 's/^Version: *//p' "$top/packaging/rpm/sbx.spec")
if [ "$version" != "$spec_version" ]; then
	echo "build-rpm.sh: packaging/rpm/sbx.spec has Version $spec_version, the Makefile" \
		"$version; update the spec and add a %changelog entry" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sbx-rpm.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/SOURCES" "$work/tree/sbx-$version"

if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git -C "$top" ls-files -z --cached --others --exclude-standard |
		(cd "$top" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) |
		(cd "$top" && tar --null -T - -cf -) | tar -C "$work/tree/sbx-$version" -xf -
else
	(cd "$top" && tar --exclude=./build --exclude=./.git -cf - .) |
		tar -C "$work/tree/sbx-$version" -xf -
fi
tar -C "$work/tree" -czf "$work/SOURCES/sbx-$version.tar.gz" "sbx-$version"

# Without find-debuginfo (Debian's rpm has none), rpmbuild cannot make debuginfo packages.
debuginfo=""
if ! command -v find-debuginfo >/dev/null 2>&1 && [ ! -x /usr/lib/rpm/find-debuginfo.sh ]; then
	debuginfo="--define=debug_package %{nil}"
fi

rpmbuild -bb --define "_topdir $work" ${debuginfo:+"$debuginfo"} "$@" \
	"$top/packaging/rpm/sbx.spec"

mkdir -p "$out"
find "$work/RPMS" -name '*.rpm' -exec cp {} "$out/" \;
echo "build-rpm.sh: packages in $out:"
ls -1 "$out"/*-"$version"-*.rpm
