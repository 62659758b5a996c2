#!/usr/bin/env bash
# client-test-timeout: 900
# franz-go's own integration suite (package pkg/kgo of the version tests/go/go.mod pins) against
# Strand: every test of the package runs; each result is judged against tests/go/expected.tsv
# (tests that need what Strand does not serve yet, with the reason). Fails when a test not listed
# there fails, or when a listed test passes or skips (the list must stay true). Skipped tests
# (an API the broker does not advertise) are reported as SKIP with their reason, not as passes.
#
# Two runs of the compiled test binary against one broker: every test but the expected failures
# (FRANZ_GO_TIMEOUT, default 10m), then the expected failures alone with a short timeout
# (FRANZ_GO_EXPECTED_TIMEOUT, default 60s: TestTxnEtl's consumers wait for records that never come).
#
# Environment: KGO_TEST_RECORDS (default 100000; franz-go's own default, 500000, also passes and takes ~20 s more),
#   FRANZ_GO_CACHE (compiled test binary, default $REPO/target/franz-go),
#   UPDATE_REPORT=1 rewrites docs/franz-go-report.md from this run,
#   FRANZ_GO_REPORT (that file instead), KGO_LOG_LEVEL (info; debug for the client's full log),
#   FRANZ_GO_RUN (a -test.run regexp: only those tests, judged alone),
#   FRANZ_GO_SEEDS=host:port (a reference run against a running broker, e.g. Apache Kafka, instead
#   of a fresh Strand; the expected failures then show up as problems when that broker passes them),
#   FRANZ_GO_RESULTS_OUT (write each test's raw outcome there: how tests/go/kafka-4.1.2.tsv is made).
set -euo pipefail
partial=()
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GO_DIR="$REPO/tests/go"
EXPECTED="$GO_DIR/expected.tsv"
# Outcomes of a reference run against Apache Kafka 4.1.2 (FRANZ_GO_SEEDS=... FRANZ_GO_RESULTS_OUT=this
# file FRANZ_GO_EXPECTED_TIMEOUT=5m): a column of the report.
REFERENCE="$GO_DIR/kafka-4.1.2.tsv"
CACHE="${FRANZ_GO_CACHE:-$REPO/target/franz-go}"
RECORDS="${KGO_TEST_RECORDS:-100000}"

command -v go >/dev/null || fail "go not installed (Go 1.26+, see scripts/install-test-deps.sh)"
mkdir -p "$CACHE"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/franz-go-test.XXXXXX")"
# shellcheck disable=SC2016
on_exit 'rm -rf "$WORK"'

# franz_go_field FIELD: a field of the pinned module (go list -m -f).
franz_go_field() { (cd "$GO_DIR" && go list -m -f "{{.$1}}" github.com/twmb/franz-go); }

# test_binary: print the path of the compiled kgo test binary, building it once per
# franz-go version and Go version.
test_binary() {
    local bin
    bin="$CACHE/kgo-$(franz_go_field Version)-$(go env GOVERSION).test"
    if [ ! -x "$bin" ]; then
        log "compiling github.com/twmb/franz-go/pkg/kgo's tests into $bin"
        (cd "$GO_DIR" && go test -c -o "$bin.tmp" github.com/twmb/franz-go/pkg/kgo) >&2
        mv "$bin.tmp" "$bin"
    fi
    echo "$bin"
}

# expected_regexp: a -test.run regexp matching exactly the tests listed in expected.tsv.
expected_regexp() {
    local names
    names="$(grep -v '^#' "$EXPECTED" | cut -f1 | grep . | paste -sd'|')"
    echo "^(${names})\$"
}

# run_suite OUT.json TIMEOUT ARGS...: run the test binary (from pkg/kgo, its tests read
# testdata there) against the broker, events as test2json.
run_suite() {
    local out="$1" timeout="$2"
    shift 2
    log "go test $* (timeout $timeout)"
    (cd "$SRC/pkg/kgo" && KGO_SEEDS="$BOOTSTRAP" KGO_TEST_RF=1 KGO_TEST_RECORDS="$RECORDS" \
        go tool test2json -t -p github.com/twmb/franz-go/pkg/kgo \
        "$BIN" -test.v=test2json -test.count=1 -test.timeout "$timeout" "$@" >"$out" 2>&1) || true
    if [ -z "${FRANZ_GO_SEEDS:-}" ]; then broker_alive; fi
}

SRC="$(franz_go_field Dir)"
VERSION="$(franz_go_field Version)"
BIN="$(test_binary)"
(cd "$GO_DIR" && go run ./brokertests "$SRC/pkg/kgo") >"$WORK/classes.tsv"

if [ -n "${FRANZ_GO_SEEDS:-}" ]; then
    BOOTSTRAP="$FRANZ_GO_SEEDS"   # a reference run against another broker, e.g. Apache Kafka
    BROKER_NAME="external broker at $FRANZ_GO_SEEDS"
else
    start_broker
    BROKER_NAME="$("$STRAND_BIN" --version) ($STRAND_BIN; repository at $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown))"
fi
started=$SECONDS
if [ -n "${FRANZ_GO_RUN:-}" ]; then
    run_suite "$WORK/main.json" "${FRANZ_GO_TIMEOUT:-10m}" -test.run "$FRANZ_GO_RUN"
    runs=("$WORK/main.json")
    partial=(--partial)
else
    run_suite "$WORK/main.json" "${FRANZ_GO_TIMEOUT:-10m}" -test.skip "$(expected_regexp)"
    run_suite "$WORK/expected.json" "${FRANZ_GO_EXPECTED_TIMEOUT:-60s}" -test.run "$(expected_regexp)"
    runs=("$WORK/main.json" "$WORK/expected.json")
fi
wall=$((SECONDS - started))
cp "${runs[@]}" "$CACHE/" 2>/dev/null || true
log "suite ran in ${wall}s; events kept in $CACHE/main.json, $CACHE/expected.json"

report=()
if [ "${UPDATE_REPORT:-0}" = 1 ]; then
    report=(--report "${FRANZ_GO_REPORT:-$REPO/docs/franz-go-report.md}"
        --meta "franz-go: github.com/twmb/franz-go $VERSION (pkg/kgo, tests from the Go module proxy's zip)"
        --meta "Go: $(go env GOVERSION)"
        --meta "Broker: $BROKER_NAME"
        --meta "Command: \`bash tests/clients/franz_go_test.sh\` (KGO_SEEDS=<a fresh broker> KGO_TEST_RF=1 KGO_TEST_RECORDS=$RECORDS; expected failures run apart with a ${FRANZ_GO_EXPECTED_TIMEOUT:-60s} timeout)"
        --meta "Run: $(date -u +%Y-%m-%dT%H:%MZ), ${wall}s for both runs of the suite on $(nproc) CPUs")
fi
if [ "${UPDATE_REPORT:-0}" = 1 ] && [ -f "$GO_DIR/report-notes.md" ]; then
    report+=(--notes "$GO_DIR/report-notes.md")
fi
if [ -f "$REFERENCE" ]; then
    report+=(--reference "$REFERENCE" --reference-name "Kafka 4.1.2")
fi
if [ -n "${FRANZ_GO_RESULTS_OUT:-}" ]; then
    report+=(--results-out "$FRANZ_GO_RESULTS_OUT")
fi
python3 "$GO_DIR/kgo_results.py" --classes "$WORK/classes.tsv" --expected "$EXPECTED" \
    "${partial[@]}" "${report[@]}" "${runs[@]}"
