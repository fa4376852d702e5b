#!/bin/sh
# Builds the Debian packages sbx, sbx-agent-sandbox and sbx-dev from this checkout and leaves
# them in build/packages/. Debian expects debian/ at the top of the source tree; sbx keeps it in
# packaging/debian, so this script copies the tree (the files git knows, plus untracked files
# that .gitignore does not exclude; without git, everything but build/ and .git/) to a
# temporary directory, puts packaging/debian at ./debian there and runs dpkg-buildpackage.
#
#   packaging/build-deb.sh [--lintian]     needs the packages from packaging/install-build-deps.sh
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
out="$top/build/packages"
run_lintian=0
for arg in "$@"; do
	case "$arg" in
	--lintian) run_lintian=1 ;;
	*) echo "build-deb.sh: unknown argument $arg; use --lintian or nothing" >&2; exit 2 ;;
	esac
done

for tool in dpkg-buildpackage dh; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "build-deb.sh: $tool is missing; run packaging/install-build-deps.sh" >&2
		exit 1
	fi
done

# The package version comes from debian/changelog; it must match the Makefile's VERSION, which
# sbx reports and records in its journal.
make_version=$(sed -n 's/^VERSION := //p' "$top/Makefile")
deb_version=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
if [ "$make_version" != "${deb_version%%-*}" ]; then
	echo "build-deb.sh: packaging/debian/changelog has version $deb_version, the Makefile" \
		"$make_version; add a changelog entry with dch -v $make_version" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sbx-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src="$work/sbx-$make_version"
mkdir "$src"

if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# Files deleted in the working tree but not yet in git are skipped.
	git -C "$top" ls-files -z --cached --others --exclude-standard |
		(cd "$top" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) |
		(cd "$top" && tar --null -T - -cf -) | tar -C "$src" -xf -
else
	(cd "$top" && tar --exclude=./build --exclude=./.git -cf - .) | tar -C "$src" -xf -
fi
rm -rf "$src/debian"
cp -r "$src/packaging/debian" "$src/debian"

(cd "$src" && dpkg-buildpackage -us -uc -b)

mkdir -p "$out"
for file in "$work"/*.deb "$work"/*.buildinfo "$work"/*.changes; do
	[ -e "$file" ] && cp "$file" "$out/"
done
echo "build-deb.sh: packages in $out:"
ls -1 "$out"/*_"$deb_version"_*.deb

if [ "$run_lintian" = 1 ]; then
	lintian --info --display-info --pedantic "$work"/*.changes
fi
