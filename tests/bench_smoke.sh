#!/usr/bin/env bash
# Smoke test of the benchmark scripts: runs `scripts/bench.sh --quick` (or, with --peer,
# `scripts/bench.sh --peer --quick`: Strand against Apache Kafka) into a temporary output file
# (BENCHMARKS.md and docs/benchmarks-strand.md are not touched) and checks the results section is
# complete: markers, the ceilings, produce rows with figures, consume, produce-and-consume-together
# and sink rows (peer: Strand, Kafka and Kafka-fsync figures, latency, consume and memory rows),
# the commands, no broker left behind. Not part of scripts/test.sh (it takes a few minutes and
# measures the machine).
# Prints PASS/FAIL per check and a final "N passed, M failed"; exits 1 on any failure.
#
# Usage: bash tests/bench_smoke.sh [--peer] [extra bench.sh / peer.py options, e.g. --no-rdkafka]
set -u
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "${1:-}" = --peer ]; then
    shift
    exec bash "$REPO/tests/bench_peer_smoke.sh" "$@"
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-smoke.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
OUT="$WORK/BENCH.md"
# shellcheck source=checks.sh
source "$REPO/tests/checks.sh"

bench_md5="$(md5sum "$REPO/BENCHMARKS.md" "$REPO/docs/benchmarks-strand.md" 2>/dev/null)"
echo "running: bash scripts/bench.sh --quick --out $OUT $*"
bash "$REPO/scripts/bench.sh" --quick --out "$OUT" "$@" >"$WORK/bench.log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then ok "bench.sh --quick exits 0"; else ko "bench.sh --quick exits 0" "exit $rc"; tail -n 30 "$WORK/bench.log" | sed 's/^/    | /'; fi

check "output file written" test -s "$OUT"
check "results between the markers" grep -q '<!-- bench:begin -->' "$OUT"
check "end marker" grep -q '<!-- bench:end -->' "$OUT"
check "BENCHMARKS.md and docs/benchmarks-strand.md untouched" test "$bench_md5" = "$(md5sum "$REPO/BENCHMARKS.md" "$REPO/docs/benchmarks-strand.md" 2>/dev/null)"

section="$(sed -n '/<!-- bench:begin -->/,/<!-- bench:end -->/p' "$OUT")"
# A table row with a figure: "| strand perf | 1 KiB | 1 | 8 | ... | 123 | ..."
produce_rows="$(grep -cE '^\| strand perf \| (1 KiB|100 B) \| (1|all) \| [0-9]+ \| [0-9]+ \| [0-9]+ \|' <<<"$section")"
if [ "$produce_rows" -ge 2 ]; then ok "produce table has $produce_rows rows with figures"; else ko "produce table has rows with figures" "$produce_rows rows"; fi
check "loopback ceiling measured" grep -qE '^\| loopback TCP \| [0-9]+ MiB/s' <<<"$section"
check "O_DIRECT ceiling measured" grep -qE '^\| O_DIRECT sequential write \| [0-9]+ MiB/s' <<<"$section"
check "fdatasync latency measured" grep -qE '^\| 4 KiB append \+ fdatasync \| p50 [0-9.]+ ms' <<<"$section"
# half load records/s, p50, p99, p99.9, request round trip p99.9, slow-device warnings
check "half-load latencies present" grep -qE '^\| strand perf \| 1 KiB \| all \|.*\| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9]+ \|$' <<<"$section"
check "consume row (tail and cold)" grep -qE '^\| 1 KiB \| [0-9]+ \| [0-9]+ MiB \| [0-9]+ \| [0-9]+% \| [0-9.]+ \([0-9]+%\) \| [0-9.]+ \| [0-9]+ \| [0-9]+% \|' <<<"$section"
check "produce-and-consume-together row" grep -qE '^\| 1 \| main \| [0-9]+ \| [0-9]+ \| [0-9]+ \| [0-9.]+ \([0-9]+%\) \| [0-9.]+ \|$' <<<"$section"
check "sink row" grep -qE '^\| strand perf \| 1 KiB \| [0-9]+ \| [0-9]+ \|' <<<"$section"
check "targets table" grep -q '^| produce 1 KiB acks=1 >= 70%' <<<"$section"
check "machine and date" grep -qE '^\| machine \| [0-9]+ cores' <<<"$section"
check "commands listed" grep -q 'strand perf produce --topic' <<<"$section"
if grep -q -- '--no-rdkafka' <<<"$*"; then
    echo "SKIP rdkafka_performance rows (--no-rdkafka)"
else
    check "rdkafka_performance rows" grep -qE '^\| rdkafka_performance \| 1 KiB \| (1|all) \| [0-9]+ \| \(librdkafka default\) \| [0-9]+ \|' <<<"$section"
fi
check "no broker left running" bash -c "! pgrep -f '$REPO/target/bench-logs/[^ ]*/[s]trand serve' >/dev/null"
check "data directories removed" bash -c "[ -z \"\$(ls -A '$REPO/target/bench-data' 2>/dev/null | grep '^run-')\" ]"

if [ "$fail" -gt 0 ]; then
    echo "bench.sh log tail:"
    tail -n 40 "$WORK/bench.log" | sed 's/^/    | /'
fi
checks_summary
