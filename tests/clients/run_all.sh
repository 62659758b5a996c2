#!/usr/bin/env bash
# Run every client compatibility test, each against its own fresh broker.
# Prints one line per test, then "N passed, M failed"; exits non-zero if any
# test failed. Full output of a failing test (including the broker log tail)
# is printed after its result line.
#
# Environment: STRAND_BIN (default $REPO/target/release/strand),
#              CLIENT_TEST_TIMEOUT (seconds per test, default 300; a test may ask for
#              more with a "# client-test-timeout: SECONDS" line near its top),
#              VERBOSE=1 to print every test's output.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export STRAND_BIN="${STRAND_BIN:-$REPO/target/release/strand}"
TEST_TIMEOUT="${CLIENT_TEST_TIMEOUT:-300}"
# Each test starts its own broker.
unset BOOTSTRAP

# Every *_test.{sh,py,js} in this folder, in name order (CLIENT_TESTS="a b" runs only those).
if [ -n "${CLIENT_TESTS:-}" ]; then
    read -r -a TESTS <<<"$CLIENT_TESTS"
else
    mapfile -t TESTS < <(cd "$HERE" && ls -1 -- *_test.sh *_test.py *_test.js 2>/dev/null | sort)
fi

if [ ! -x "$STRAND_BIN" ]; then
    echo "run_all: broker binary not found or not executable: $STRAND_BIN" >&2
fi

OUT="$(mktemp -d "${TMPDIR:-/tmp}/strand-client-tests.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT

passed=0
failed=0
failed_names=()
for t in "${TESTS[@]}"; do
    case "$t" in
        *.sh) cmd=(bash "$HERE/$t") ;;
        *.py) cmd=(python3 "$HERE/$t") ;;
        *.js) cmd=(node "$HERE/$t") ;;
    esac
    # A test may need longer: a "# client-test-timeout: SECONDS" line in its first lines.
    t_timeout="$(head -n 5 "$HERE/$t" | sed -n 's/^# client-test-timeout: \([0-9]*\)$/\1/p')"
    t_timeout="${t_timeout:-$TEST_TIMEOUT}"
    start=$SECONDS
    # --kill-after: if the test ignores SIGTERM, SIGKILL it 10s later.
    timeout --kill-after=10 "$t_timeout" "${cmd[@]}" >"$OUT/$t.log" 2>&1 </dev/null
    rc=$?
    dur=$((SECONDS - start))
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "PASS  $t (${dur}s)"
        [ "${VERBOSE:-0}" = 1 ] && sed 's/^/    /' "$OUT/$t.log"
        # confluent-kafka test reports the librdkafka it used.
        grep -h '^librdkafka version:' "$OUT/$t.log" | sed 's/^/      /' || true
    else
        failed=$((failed + 1))
        failed_names+=("$t")
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "FAIL  $t (timed out after ${t_timeout}s)"
        else
            echo "FAIL  $t (exit $rc, ${dur}s)"
        fi
        echo "----- output of $t -----"
        sed 's/^/    /' "$OUT/$t.log"
        echo "----- end of $t -----"
    fi
done

if [ "$failed" -gt 0 ]; then
    echo "failed client tests: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
