#!/bin/bash
# Runs the unit tests (Check) and the integration tests (Python, Debian's /usr/bin/python3)
# against the binaries in BUILD_DIR, and ends with one "N passed, N failed" line.
#
#   tests/run-tests.sh [--unit-only] [--valgrind] BUILD_DIR
set -u

unit_only=0
valgrind=0
while [ $# -gt 1 ]; do
	case "$1" in
	--unit-only) unit_only=1 ;;
	--valgrind) valgrind=1 ;;
	*) echo "run-tests.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
build=${1:?usage: run-tests.sh [--unit-only] [--valgrind] BUILD_DIR}
build=$(cd "$build" && pwd)
top=$(cd "$(dirname "$0")/.." && pwd)

passed=0
failed=0
failed_names=()

run_unit() {
	local test=$1 output status checks failures errors
	if [ "$valgrind" = 1 ]; then
		# Check forks each test; valgrind follows the children.
		output=$(CK_FORK=no valgrind --quiet --error-exitcode=99 --leak-check=full \
			--errors-for-leak-kinds=definite --trace-children=no "$test" 2>&1)
	else
		output=$("$test" 2>&1)
	fi
	status=$?
	printf '%s\n' "$output"
	checks=$(printf '%s\n' "$output" | sed -n 's/.*Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p' | tail -n 1)
	if [ -n "$checks" ]; then
		read -r total failures errors <<<"$checks"
		passed=$((passed + total - failures - errors))
		failed=$((failed + failures + errors))
	fi
	if [ "$status" -ne 0 ] || [ -z "$checks" ]; then
		failed_names+=("$(basename "$test") (exit $status)")
		[ -z "$checks" ] && failed=$((failed + 1))
	fi
}

for test in "$build"/tests/test_*; do
	[ -x "$test" ] || continue
	echo "== unit: $(basename "$test")"
	run_unit "$test"
done

# Fuzz targets replay their seed corpus; each replay counts as one test.
for fuzz in "$build"/tests/fuzz/fuzz_*; do
	[ -x "$fuzz" ] || continue
	name=$(basename "$fuzz")
	echo "== fuzz corpus: $name"
	if "$fuzz" "$top/tests/fuzz/corpus/${name#fuzz_}"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failed_names+=("$name (corpus replay)")
	fi
done

if [ "$unit_only" = 0 ] && [ -d "$top/tests/integration" ]; then
	echo "== integration tests"
	report=$(mktemp)
	SBX_BUILD_DIR="$build" /usr/bin/python3 "$top/tests/integration/runner.py" \
		--report "$report" "$top/tests/integration"
	status=$?
	if [ -s "$report" ]; then
		read -r ipassed ifailed <"$report"
		passed=$((passed + ipassed))
		failed=$((failed + ifailed))
	fi
	if [ "$status" -ne 0 ]; then
		failed_names+=("integration tests (exit $status)")
		[ -s "$report" ] || failed=$((failed + 1))
	fi
	rm -f "$report"
fi

if [ ${#failed_names[@]} -gt 0 ]; then
	echo "Failed:"
	printf '  %s\n' "${failed_names[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ ${#failed_names[@]} -eq 0 ]
