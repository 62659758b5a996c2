#!/usr/bin/env bash
# The project test command: bash scripts/test.sh
#   1. install client test dependencies (idempotent)
#   2. cargo build --release
#   3. cargo test --release   (unit + integration tests)
#   4. client compatibility tests against the release binary
# Fails as soon as any step fails.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
T0=$SECONDS
step() { echo; echo "==== [$((SECONDS - T0))s] $* ===="; }

step "1/4 install test dependencies"
bash scripts/install-test-deps.sh

step "2/4 cargo build --release"
cargo build --release

step "3/4 cargo test --release"
cargo test --release

step "4/4 client compatibility tests"
STRAND_BIN="${STRAND_BIN:-$REPO/target/release/strand}" bash tests/clients/run_all.sh

step "all steps passed"
