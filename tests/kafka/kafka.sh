#!/usr/bin/env bash
# Apache Kafka for the tests, resolved from Maven Central (pom.xml beside this file) and run in KRaft
# mode on free 127.0.0.1 ports. Used by .ci/run, by the tests that need a cluster of their own (restart,
# failover) and by developers:
#
#   tests/kafka/kafka.sh fetch               resolve the jars (cached under ~/.cache; prints the folder)
#   tests/kafka/kafka.sh start DIR [NODES]   start a cluster of 1 (broker+controller) or 3 nodes in DIR,
#                                            wait until every node serves, print the bootstrap servers
#   tests/kafka/kafka.sh stop DIR [NODE]     stop (SIGTERM) every node, or one, and wait for it to exit
#   tests/kafka/kafka.sh kill DIR NODE       SIGKILL one node
#   tests/kafka/kafka.sh restart DIR NODE    start a stopped or killed node again and wait until it serves
#
# A three-node cluster has replication factor 3 and min.insync.replicas=2, so it keeps serving, and keeps
# every acknowledged write, with one node down. Environment: KAFKA_HEAP (default 768m), CHAOSEATER_M2
# (Maven's local repository, default ~/.cache/chaoseater/m2).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")"
LIBS="${CHAOSEATER_KAFKA_LIBS:-$HOME/.cache/chaoseater/kafka-$VERSION/libs}"
HEAP="${KAFKA_HEAP:-768m}"
M2="${CHAOSEATER_M2:-$HOME/.cache/chaoseater/m2}"

die() { echo "kafka.sh: $*" >&2; exit 1; }

fetch() {
  # The marker is written last, so an interrupted download is redone rather than half-used.
  if [ ! -f "$LIBS/.complete" ] || [ "$HERE/pom.xml" -nt "$LIBS/.complete" ]; then
    rm -rf "$LIBS"
    mkdir -p "$LIBS"
    mvn -q -B -f "$HERE/pom.xml" "-Dmaven.repo.local=$M2" dependency:copy-dependencies \
      -DoutputDirectory="$LIBS" -DincludeScope=runtime >&2 || die "Maven could not resolve Apache Kafka $VERSION"
    touch "$LIBS/.complete"
  fi
  echo "$LIBS"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

node_count() { cat "$1/nodes" 2>/dev/null || die "no cluster in $1 (start one first)"; }

# Writes DIR/node-N/server.properties for every node, and DIR/bootstrap.
configure() {
  local dir=$1 nodes=$2 voters="" bootstrap="" n
  local -a ports controllers
  for n in $(seq 1 "$nodes"); do
    ports[n]=$(free_port)
    controllers[n]=$(free_port)
    voters+="${voters:+,}$n@127.0.0.1:${controllers[n]}"
    bootstrap+="${bootstrap:+,}127.0.0.1:${ports[n]}"
  done
  local replicas=$(( nodes >= 3 ? 3 : 1 )) min_isr=$(( nodes >= 3 ? 2 : 1 ))
  for n in $(seq 1 "$nodes"); do
    mkdir -p "$dir/node-$n/data"
    cat >"$dir/node-$n/server.properties" <<EOF
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:${ports[n]},CONTROLLER://127.0.0.1:${controllers[n]}
advertised.listeners=PLAINTEXT://127.0.0.1:${ports[n]}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/node-$n/data
# As in production: topics are created by \`chaoseater topics create\`, never on first use.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=$replicas
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replicas
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
# Tests start consumer groups one after another: no three-second wait for more members.
group.initial.rebalance.delay.ms=0
# Small segments and no flush tuning: durability comes from replication, as in production.
log.segment.bytes=16777216
EOF
  done
  echo "$nodes" >"$dir/nodes"
  echo "$bootstrap" >"$dir/bootstrap"
  cat >"$dir/log4j2.properties" <<EOF
status=warn
appender.file.type=File
appender.file.name=file
appender.file.fileName=\${sys:kafka.logs.dir}/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
logger.kafka.name=org.apache.kafka
logger.kafka.level=INFO
EOF
}

# Runs Kafka's class $2 for the node whose folder is $1. Called in a background subshell it replaces
# that subshell (exec), so the pid recorded is the JVM's own and a signal reaches the broker itself.
java_run() {
  local node_dir=$1; shift
  exec java "-Xmx$HEAP" "-Xms$HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$node_dir/../log4j2.properties" "-Dkafka.logs.dir=$node_dir" \
    -cp "$LIBS/*" "$@"
}

# Starts node N in the background (its log rotated), without waiting.
launch() {
  local dir=$1 n=$2 node_dir="$1/node-$2"
  if [ -f "$node_dir/pid" ] && kill -0 "$(cat "$node_dir/pid")" 2>/dev/null; then
    die "node $n in $dir is already running (pid $(cat "$node_dir/pid"))"
  fi
  [ -f "$node_dir/server.log" ] && mv "$node_dir/server.log" "$node_dir/server.log.$(date +%s%N)"
  (java_run "$node_dir" kafka.Kafka "$node_dir/server.properties") </dev/null >"$node_dir/stdout.log" 2>&1 &
  echo $! >"$node_dir/pid"
}

# Waits until node N logs that it serves (the broker opens its listener for requests only once it has
# caught up with the metadata log and is unfenced), or fails with its log.
await() {
  local dir=$1 n=$2 node_dir="$1/node-$2" deadline=$(( SECONDS + 120 ))
  until grep -qs "Kafka Server started" "$node_dir/server.log"; do
    if ! kill -0 "$(cat "$node_dir/pid")" 2>/dev/null; then
      tail -n 40 "$node_dir/stdout.log" "$node_dir/server.log" >&2 || true
      die "node $n exited while starting (logs in $node_dir)"
    fi
    if (( SECONDS > deadline )); then
      tail -n 40 "$node_dir/server.log" >&2 || true
      die "node $n did not start within 120 s (logs in $node_dir)"
    fi
    sleep 0.2
  done
}

start() {
  local dir=${1:?usage: kafka.sh start DIR [NODES]} nodes=${2:-1} n
  [[ "$nodes" =~ ^[13]$ ]] || die "NODES is 1 or 3, not $nodes"
  fetch >/dev/null
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  [ -f "$dir/nodes" ] && die "$dir already holds a cluster: stop it, or use restart"
  configure "$dir" "$nodes"
  # The id may start with "-": it is passed as --cluster-id=ID, never as a separate argument.
  local cluster_id
  cluster_id=$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
  for n in $(seq 1 "$nodes"); do
    (java_run "$dir/node-$n" kafka.tools.StorageTool format --ignore-formatted \
      "--cluster-id=$cluster_id" -c "$dir/node-$n/server.properties") >"$dir/node-$n/format.log" 2>&1 \
      || { cat "$dir/node-$n/format.log" >&2; die "could not format node $n's storage"; }
  done
  # Every node at once: with three voters none can start before a quorum has.
  for n in $(seq 1 "$nodes"); do launch "$dir" "$n"; done
  for n in $(seq 1 "$nodes"); do await "$dir" "$n"; done
  cat "$dir/bootstrap"
}

# Sends SIG to the given nodes at once (a three-node cluster stopped one by one would lose its quorum
# while the last nodes still try a controlled shutdown), then waits for each to exit.
signal_nodes() {
  local dir=$1 sig=$2 n pid deadline=$(( SECONDS + 60 ))
  shift 2
  local -a pids=()
  for n in "$@"; do
    pid=$(cat "$dir/node-$n/pid" 2>/dev/null) || die "no node $n in $dir"
    kill "-$sig" "$pid" 2>/dev/null && pids+=("$pid")
  done
  # A graceful stop moves leadership away and flushes; give it the minute Kafka's own script does.
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      (( SECONDS > deadline )) && { kill -KILL "$pid" 2>/dev/null || true; }
      sleep 0.1
    done
  done
}

stop() {
  local dir=${1:?usage: kafka.sh stop DIR [NODE]}
  if [ -n "${2:-}" ]; then
    signal_nodes "$dir" TERM "$2"
  else
    # shellcheck disable=SC2046
    signal_nodes "$dir" TERM $(seq 1 "$(node_count "$dir")")
  fi
}

case "${1:-}" in
  fetch) fetch ;;
  start) start "${2:-}" "${3:-1}" ;;
  stop) stop "${2:-}" "${3:-}" ;;
  kill) signal_nodes "${2:?usage: kafka.sh kill DIR NODE}" KILL "${3:?usage: kafka.sh kill DIR NODE}" ;;
  restart)
    node_count "${2:?usage: kafka.sh restart DIR NODE}" >/dev/null
    launch "$2" "${3:?usage: kafka.sh restart DIR NODE}"
    await "$2" "$3"
    ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
