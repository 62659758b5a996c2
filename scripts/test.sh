#!/usr/bin/env bash
# The project test command: bash scripts/test.sh
#   1. install client test dependencies (idempotent)
#   2. cargo build --release
#   3. cargo test --release   (unit + integration tests)
#   4. client compatibility tests against the release binary (tests/clients: kcat, Python,
#      Node, Kafka's CLI tools, franz-go's suite, ...)
#   5. Java ecosystem tests (tests/java: Java client, Streams; Maven Surefire)
# Fails as soon as any step fails.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
T0=$SECONDS
step() { echo; echo "==== [$((SECONDS - T0))s] $* ===="; }

step "1/5 install test dependencies"
bash scripts/install-test-deps.sh

step "2/5 cargo build --release"
cargo build --release

step "3/5 cargo test --release"
cargo test --release

step "4/5 client compatibility tests"
STRAND_BIN="${STRAND_BIN:-$REPO/target/release/strand}" bash tests/clients/run_all.sh

step "5/5 Java ecosystem tests (Maven Surefire)"
STRAND_BIN="${STRAND_BIN:-$REPO/target/release/strand}" mvn -B -f tests/java/pom.xml test

step "all steps passed"
