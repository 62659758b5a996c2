#!/usr/bin/env bash
# Install everything the client compatibility tests need. Idempotent: each
# dependency is checked first and only missing ones are installed.
#
#   kcat                          (Debian apt; links the distro librdkafka 2.0.x)
#   strace                        (Debian apt; shows cold fetches use sendfile)
#   kafka-python, confluent-kafka (PyPI; confluent-kafka bundles a current librdkafka)
#   python-snappy, lz4, zstandard (PyPI; kafka-python's snappy/lz4/zstd codecs)
#   kafkajs                       (npm, into tests/clients/node_modules from the lockfile)
#   Apache Kafka 4.1 jars         (Maven Central, scripts/install-kafka.sh: CLI tools, broker,
#                                  Streams, Connect; cached in ~/.cache/strand)
#   tests/java's dependencies     (Maven Central, into ~/.m2: kafka-clients, JUnit 5)
#   franz-go                      (Go module proxy, into the Go module cache)
#
# Must run as root on Debian (CI runs as root). Network: Debian apt, PyPI, npm.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLIENTS="$REPO/tests/clients"
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHON="${PYTHON:-python3}"

log() { echo "[install-test-deps] $*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        log "WARNING: not root and no sudo; apt installs will fail"
    fi
fi

# ---- apt packages ---------------------------------------------------------
apt_pkgs=()
command -v kcat >/dev/null 2>&1 || apt_pkgs+=(kcat)
command -v strace >/dev/null 2>&1 || apt_pkgs+=(strace)
command -v timeout >/dev/null 2>&1 || apt_pkgs+=(coreutils)
command -v npm >/dev/null 2>&1 || apt_pkgs+=(nodejs npm)
command -v "$PYTHON" >/dev/null 2>&1 || apt_pkgs+=(python3 python3-pip)

if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    log "apt: installing ${apt_pkgs[*]}"
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${apt_pkgs[@]}"
else
    log "apt: kcat, npm, python3 already present"
fi
log "kcat: $(kcat -V 2>&1 | grep -m1 '^Version' || echo unknown)"

# ---- Python clients -------------------------------------------------------
if "$PYTHON" -c 'import kafka, confluent_kafka, snappy, lz4.frame, zstandard' >/dev/null 2>&1; then
    log "pip: kafka-python, confluent-kafka and the snappy/lz4/zstd codecs already importable"
else
    log "pip: installing from tests/clients/requirements.txt"
    # PIP_BREAK_SYSTEM_PACKAGES lets this work on a Debian-managed python3 too;
    # older pips ignore it.
    PIP_BREAK_SYSTEM_PACKAGES=1 "$PYTHON" -m pip install -q --no-input --root-user-action=ignore \
        -r "$CLIENTS/requirements.txt"
    "$PYTHON" -c 'import kafka, confluent_kafka, snappy, lz4.frame, zstandard'
fi
"$PYTHON" - <<'PY'
import kafka, confluent_kafka
print("[install-test-deps] kafka-python %s, confluent-kafka %s (librdkafka %s)"
      % (kafka.__version__, confluent_kafka.__version__, confluent_kafka.libversion()[0]))
from kafka import codec
print("[install-test-deps] kafka-python codecs: gzip %s, snappy %s, lz4 %s, zstd %s"
      % (codec.has_gzip(), codec.has_snappy(), codec.has_lz4(), codec.has_zstd()))
PY

# ---- Node clients ---------------------------------------------------------
if [ -f "$CLIENTS/node_modules/kafkajs/package.json" ]; then
    log "npm: kafkajs already in tests/clients/node_modules"
else
    log "npm: installing tests/clients dependencies"
    cd "$CLIENTS"
    if [ -f package-lock.json ]; then
        npm ci --no-audit --no-fund --loglevel=error
    else
        npm install --no-audit --no-fund --loglevel=error
    fi
    cd "$REPO"
fi
log "kafkajs: $(node -p 'require(process.argv[1]).version' "$CLIENTS/node_modules/kafkajs/package.json")"
# ---- Java: Kafka's jars and the Java test module ----------------------------
command -v mvn >/dev/null 2>&1 && command -v java >/dev/null 2>&1 || {
    log "apt: installing maven and a JDK"
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends maven openjdk-17-jdk-headless
}
log "kafka jars: $(bash "$REPO/scripts/install-kafka.sh")"
# Resolves the test module's dependencies and plugins into ~/.m2 (a no-op when cached).
mvn -q -B -f "$REPO/tests/java/pom.xml" test-compile >/dev/null
log "tests/java: dependencies resolved and compiled"

# ---- Go: franz-go's module (its integration tests run from the module cache) ----
if [ -f "$REPO/tests/go/go.mod" ]; then
    (cd "$REPO/tests/go" && go mod download)
    # Compiles pkg/kgo's tests once into Go's build cache (tests/clients/franz_go_test.sh then only links).
    (cd "$REPO/tests/go" && go test -c -o /dev/null github.com/twmb/franz-go/pkg/kgo)
    log "franz-go: $(cd "$REPO/tests/go" && go list -m -f '{{.Version}}' github.com/twmb/franz-go)"
fi
log "done"
