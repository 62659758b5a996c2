#!/usr/bin/env bash
# Smoke test of the Strand-vs-Kafka benchmark (scripts/bench/peer.py, `scripts/bench.sh --peer`):
# runs `--peer --quick` into a temporary output file (BENCHMARKS.md is not touched) and checks
# the section: markers, machine and ceilings, produce rows with Strand, Kafka and Kafka-fsync
# figures and their ratio, the fixed-rate latency rows, tail and cold consume rows for both
# brokers, the memory table, the commands; and that no broker process nor data directory is left.
# Not part of scripts/test.sh (about 3 minutes; it starts a JVM broker and measures the machine).
# Prints PASS/FAIL per check and "N passed, M failed"; exits 1 on any failure.
#
# Usage: bash tests/bench_peer_smoke.sh [extra peer.py options]   (or: bash tests/bench_smoke.sh --peer)
set -u
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-peer-smoke.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
OUT="$WORK/BENCH.md"
# shellcheck source=checks.sh
source "$REPO/tests/checks.sh"

bench_md5="$(md5sum "$REPO/BENCHMARKS.md" 2>/dev/null)"
echo "running: bash scripts/bench.sh --peer --quick --out $OUT $*"
bash "$REPO/scripts/bench.sh" --peer --quick --out "$OUT" "$@" >"$WORK/peer.log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then ok "bench.sh --peer --quick exits 0"; else ko "bench.sh --peer --quick exits 0" "exit $rc"; fi

check "output file written" test -s "$OUT"
check "begin marker" grep -q '<!-- peer:begin -->' "$OUT"
check "end marker" grep -q '<!-- peer:end -->' "$OUT"
check "BENCHMARKS.md untouched" test "$bench_md5" = "$(md5sum "$REPO/BENCHMARKS.md" 2>/dev/null)"

section="$(sed -n '/<!-- peer:begin -->/,/<!-- peer:end -->/p' "$OUT")"
check "machine row" grep -qE '^\| machine \| [0-9]+ cores' <<<"$section"
check "Kafka version row" grep -q '^| Kafka | Apache Kafka 4.1.2' <<<"$section"
check "ceilings measured" grep -qE '^\| [0-9]+ MiB/s \| [0-9]+ MiB/s \| [0-9]+ MiB/s \| [0-9]+ us / [0-9]+ us \|$' <<<"$section"
# | producer | record | acks | partitions | strand | kafka | kafka-fsync | ratio | ratio | cpu x3 |
check "produce row, acks=1: Strand and Kafka figures and their ratio" \
    grep -qE '^\| kafka-producer-perf-test, defaults \| 1 KiB \| 1 \| 16 \| [0-9.]+ \| [0-9.]+ \|  \| [0-9.]+ \| - \| [0-9.]+ \| [0-9.]+ \| - \|$' <<<"$section"
check "produce row, acks=all: Strand, Kafka and Kafka-fsync figures" \
    grep -qE '^\| kafka-producer-perf-test, defaults \| 1 KiB \| all \| 16 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$' <<<"$section"
rows="$(grep -cE '^\| (kafka-producer-perf-test|rdkafka_performance|strand perf produce)[^|]* \| (1 KiB|100 B) \| (1|all) \| [0-9]+ \| [0-9.]+ \|' <<<"$section")"
if [ "$rows" -ge 5 ]; then ok "produce table has $rows rows with figures"; else ko "produce table has 5 rows with figures" "$rows"; fi
for t in strand kafka kafka-fsync; do
    check "latency row for $t" grep -qE "^\| kafka-producer-perf-test \| $t \| [0-9]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|" <<<"$section"
done
for client in kafka-consumer-perf-test 'strand perf consume'; do
    for phase in tail cold; do
        check "consume row: $client, $phase" grep -qE "^\| $client \| $phase \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|$" <<<"$section"
    done
done
check "memory rows" bash -c "grep -qE '^\| strand( \| [0-9]+ MiB){3} \|$' <<<\"\$1\" && grep -qE '^\| kafka( \| [0-9]+ MiB){3} \|$' <<<\"\$1\"" _ "$section"
check "no failed run" bash -c "! grep -q 'failed' <<<\"\$1\"" _ "$section"
check "commands listed" grep -q '^kafka-server-start \$LOGS/kafka-server.properties$' <<<"$section"
check "no broker left running" bash -c "! pgrep -f 'target/bench-logs/peer-[^ ]*/(strand serve|kafka-server.properties)' >/dev/null"
check "data directories removed" bash -c "[ -z \"\$(ls -A '$REPO/target/bench-data' 2>/dev/null | grep '^peer-')\" ]"

if [ "$fail" -gt 0 ]; then
    echo "peer.py log tail:"
    tail -n 40 "$WORK/peer.log" | sed 's/^/    | /'
fi
checks_summary
