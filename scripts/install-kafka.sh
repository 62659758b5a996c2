#!/usr/bin/env bash
# Install Apache Kafka's jars (broker, CLI tools, clients, Streams, Connect, an SLF4J binding)
# from Maven Central into one cached folder, and print that folder.
#
#   bash scripts/install-kafka.sh          # prints e.g. /root/.cache/strand/kafka-4.1.2/libs
#
# Idempotent: a folder completed once is reused (Maven's own ~/.m2 cache also holds the jars).
# The versions live in scripts/kafka/pom.xml. Environment: STRAND_CACHE (default ~/.cache/strand).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$HERE/kafka/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
CACHE="${STRAND_CACHE:-$HOME/.cache/strand}"
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
# The pom's hash is part of the marker: editing the jar list reinstalls.
STAMP="$(sha256sum "$POM" | cut -c1-16)"

if [ -f "$LIBS/.complete-$STAMP" ]; then
    echo "$LIBS"
    exit 0
fi
command -v mvn >/dev/null 2>&1 || { echo "install-kafka: mvn not found (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null 2>&1 || { echo "install-kafka: java not found (apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }
echo "[install-kafka] resolving Kafka $KAFKA_VERSION jars from Maven Central into $LIBS" >&2
rm -rf "$LIBS.tmp"
mkdir -p "$LIBS.tmp"
mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$LIBS.tmp" >&2
cp "$HERE/kafka/log4j2.properties" "$LIBS.tmp/"
rm -rf "$LIBS"
mv "$LIBS.tmp" "$LIBS"
touch "$LIBS/.complete-$STAMP"
echo "[install-kafka] $(ls "$LIBS"/*.jar | wc -l) jars in $LIBS" >&2
echo "$LIBS"
