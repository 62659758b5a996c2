#!/usr/bin/env bash
# The long form of the crash-loop test: a librdkafka producer (acks=all, then idempotent) keeps
# producing while the broker is SIGKILLed and restarted KILLS times (default 20); afterwards every
# acknowledged record must be in the log at its acknowledged offset (exactly once with
# idempotence) and `strand verify` must find the data directory clean.
#   scripts/crash-loop.sh [KILLS] [ROUNDS]
# ROUNDS (default 1) repeats the whole run. Full output of each round: target/crash-loop-N.log.
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS="${1:-20}"
ROUNDS="${2:-1}"
cargo build --release
for round in $(seq 1 "$ROUNDS"); do
  echo "== crash loop round $round/$ROUNDS: $KILLS kills per run =="
  log="target/crash-loop-$round.log"
  status=0
  STRAND_CRASH_KILLS="$KILLS" cargo test --release --test crash_recovery -- crash_loop --nocapture --test-threads=1 \
    >"$log" 2>&1 || status=$?
  grep -E "crash loop|records in the log|^total|^test |panicked" "$log" || true
  if [ "$status" -ne 0 ]; then
    echo "round $round FAILED; see $log"
    exit 1
  fi
done
echo "crash loop: all $ROUNDS round(s) passed"
