#!/usr/bin/env bash
# Builds librdkafka's rdkafka_performance from the sources rdkafka-sys vendors (the version in
# Cargo.lock), once, cached as target/bench-rdkafka/rdkafka_performance-<rdkafka-sys version>.
# Used by scripts/bench.sh and scripts/bench/peer.py.
#
#   bash scripts/bench/build-rdkafka.sh [BUILD_LOG]
#
# Prints the binary's path on stdout (last line) and exits 0; on failure prints the reason on
# stderr and exits 1. Progress goes to stderr, the build's output to BUILD_LOG (default
# target/bench-rdkafka/build.log). No network beyond `cargo fetch` when the sources are missing;
# no optional dependencies (they do not matter for an uncompressed, plaintext benchmark).
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="$REPO/target/bench-rdkafka"
mkdir -p "$DEST"
LOG="${1:-$DEST/build.log}"
fail() { echo "$*" >&2; exit 1; }

registry_src() { ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$1"/librdkafka 2>/dev/null | sort -V | tail -n 1; }
want="$(awk '/^name = "rdkafka-sys"/ { getline; gsub(/"/, "", $3); print $3; exit }' "$REPO/Cargo.lock" 2>/dev/null)"
src=""
[ -z "$want" ] || src="$(registry_src "rdkafka-sys-$want")"
[ -n "$src" ] || src="$(registry_src 'rdkafka-sys-*')"
if [ -z "$src" ] && command -v cargo >/dev/null 2>&1; then
    echo "rdkafka-sys sources not in the cargo registry: cargo fetch" >&2
    (cd "$REPO" && cargo fetch >>"$LOG" 2>&1)
    [ -z "$want" ] || src="$(registry_src "rdkafka-sys-$want")"
    [ -n "$src" ] || src="$(registry_src 'rdkafka-sys-*')"
fi
[ -n "$src" ] || fail "the librdkafka sources vendored by rdkafka-sys were not found under ~/.cargo/registry/src"
ver="$(basename "$(dirname "$src")")"
bin="$DEST/rdkafka_performance-$ver"
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
for t in cc make; do
    command -v "$t" >/dev/null 2>&1 || fail "no C compiler/make (apt-get install build-essential)"
done
echo "building rdkafka_performance from $ver (once; cached in $DEST; log $LOG)" >&2
rm -rf "${DEST:?}/$ver"
cp -a "$src" "$DEST/$ver" || fail "cannot copy $src"
if ! (cd "$DEST/$ver" &&
    ./configure --disable-gssapi --disable-curl --disable-ssl --disable-zstd --disable-lz4-ext \
        >>"$LOG" 2>&1 &&
    make -j"$(nproc)" -C src librdkafka.a >>"$LOG" 2>&1 &&
    make -C examples rdkafka_performance >>"$LOG" 2>&1); then
    fail "the build failed, see $LOG"
fi
cp "$DEST/$ver/examples/rdkafka_performance" "$bin" || fail "no binary after the build"
echo "$bin"
