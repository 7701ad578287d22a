#!/usr/bin/env bash
# The Java reference clients (Interop.java): builds them with Maven when the sources changed, then runs
#   tests/java/interop.sh build
#   tests/java/interop.sh publish|verify BROKERS PREFIX AVRO_DIR RUN_ID REGION[,REGION...]
# Maven's repository is ~/.cache/chaoseater/m2 (CHAOSEATER_M2), shared with tests/kafka/kafka.sh.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
M2="${CHAOSEATER_M2:-$HOME/.cache/chaoseater/m2}"
STAMP="$HERE/target/.built"

build() {
  local newest
  newest=$(find "$HERE/pom.xml" "$HERE/src" -type f -newer "$STAMP" 2>/dev/null | head -1 || true)
  if [ ! -f "$STAMP" ] || [ -n "$newest" ]; then
    mvn -q -B -f "$HERE/pom.xml" "-Dmaven.repo.local=$M2" package >&2 \
      || { echo "interop.sh: the Java clients did not build" >&2; exit 1; }
    touch "$STAMP"
  fi
}

case "${1:-}" in
  build) build ;;
  publish | verify)
    build
    exec java -cp "$HERE/target/classes:$HERE/target/libs/*" io.chaoseater.interop.Interop "$@"
    ;;
  *) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
