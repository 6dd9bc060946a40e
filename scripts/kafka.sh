#!/usr/bin/env bash
# Installs and runs a real Apache Kafka 4.x broker for the tests: one KRaft node (broker and
# controller in one JVM) on 127.0.0.1:9092, controller on 127.0.0.1:9093.
#
# The broker comes from Maven Central (org.apache.kafka:kafka_2.13 plus kafka-tools and a
# log4j2 binding, with their runtime dependencies), fetched once with mvn into
# .cache/kafka/<version>/libs under the repo root; later runs do not call Maven.
# Data lives in $ARTSTORE_KAFKA_DIR (default /var/lib/artstore-kafka): server.properties,
# kafka.pid, logs/server.log and the topics in data/. Storage is formatted once, so topics
# survive stop/start.
#
# Usage: scripts/kafka.sh [ensure|start|stop|restart|status|classpath|tool CLASS ARGS...]
#   ensure     (default) install, format and start if needed, wait until ready;
#              does nothing when the broker port already answers Kafka requests.
#   start      like ensure, but fails if the port is taken by a broker it did not start.
#   stop       SIGTERM, wait up to 30 s, then SIGKILL. Keeps the data.
#   restart    stop, then start.
#   status     prints the state; exit 0 when the broker answers, 3 otherwise.
#   classpath  prints the java classpath of the broker and tools ('<libs>/*').
#   tool       runs a Kafka command-line class, e.g.
#              scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 --list
# Environment: ARTSTORE_KAFKA_DIR, ARTSTORE_KAFKA_PORT (9092), ARTSTORE_KAFKA_CONTROLLER_PORT
# (9093), ARTSTORE_KAFKA_START_TIMEOUT (seconds, 90), ARTSTORE_KAFKA_VERSION.
set -euo pipefail

log() { echo "scripts/kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KAFKA_VERSION=${ARTSTORE_KAFKA_VERSION:-4.4.0}
LOG4J_VERSION=2.25.5 # the log4j-core that kafka-server itself depends on
HOST=127.0.0.1
PORT=${ARTSTORE_KAFKA_PORT:-9092}
CONTROLLER_PORT=${ARTSTORE_KAFKA_CONTROLLER_PORT:-9093}
START_TIMEOUT=${ARTSTORE_KAFKA_START_TIMEOUT:-90}
DIR=${ARTSTORE_KAFKA_DIR:-/var/lib/artstore-kafka}

CACHE=$ROOT/.cache/kafka
HOME_DIR=$CACHE/$KAFKA_VERSION
LIBS=$HOME_DIR/libs
MARKER=$HOME_DIR/libs.complete
# What the libs folder holds; a change here makes the next run fetch again.
FETCH_SPEC="kafka_2.13:$KAFKA_VERSION kafka-tools:$KAFKA_VERSION(-connect-runtime) log4j-slf4j-impl:$LOG4J_VERSION"

CONF=$DIR/server.properties
LOG4J_CONF=$DIR/log4j2.properties
PIDFILE=$DIR/kafka.pid
LOGDIR=$DIR/logs
LOG=$LOGDIR/server.log
LOG_OFFSET=$DIR/server.log.offset # size of server.log when the running broker was launched
DATA=$DIR/data                   # log.dirs: only topic partitions and meta.properties go here

JAVA_OPTS=(-Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
  -Djava.awt.headless=true)

# --- installation -------------------------------------------------------------------------

need_tools() {
  local pkgs=()
  command -v java >/dev/null 2>&1 || pkgs+=(openjdk-17-jre-headless)
  if [ ! -f "$MARKER" ] || [ "$(cat "$MARKER")" != "$FETCH_SPEC" ]; then
    command -v mvn >/dev/null 2>&1 || pkgs+=(maven)
  fi
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
}

# Fetches the broker jars into $LIBS unless the marker says they are all there.
install_libs() {
  if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$FETCH_SPEC" ]; then write_log4j_confs; return 0; fi
  need_tools
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.lock"
  flock -w 600 8 || die "timed out waiting for another fetch ($CACHE/.lock)"
  if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$FETCH_SPEC" ]; then exec 8>&-; return 0; fi
  log "fetching Kafka $KAFKA_VERSION from Maven Central into $LIBS"
  mkdir -p "$HOME_DIR"
  rm -rf "$LIBS" "$LIBS.tmp" "$MARKER"
  cat >"$HOME_DIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.artstore</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version>
    </dependency>
    <!-- TopicCommand, ConsumerGroupCommand, ... (Connect's REST server is not needed) -->
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version>
      <exclusions>
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
      </exclusions>
    </dependency>
    <!-- Kafka logs through slf4j 1.7; route it to log4j2 (log4j-core comes with kafka-server). -->
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
  if ! mvn -B -q -Dstyle.color=never -f "$HOME_DIR/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS.tmp" >"$HOME_DIR/mvn.log" 2>&1; then
    tail -n 40 "$HOME_DIR/mvn.log" >&2
    die "mvn could not fetch Kafka $KAFKA_VERSION (log: $HOME_DIR/mvn.log)"
  fi
  [ -f "$LIBS.tmp/kafka_2.13-$KAFKA_VERSION.jar" ] || die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"
  mv "$LIBS.tmp" "$LIBS"
  write_log4j_confs
  echo "$FETCH_SPEC" >"$MARKER"
  log "fetched $(ls "$LIBS" | wc -l) jars ($(du -sh "$LIBS" | cut -f1))"
  exec 8>&-
}

# Command-line tools log warnings and errors only, to stderr. Replaced atomically and only when
# changed, since many test processes may run tools at once.
write_log4j_confs() {
  local f=$HOME_DIR/config/tools-log4j2.properties want
  want=$(cat <<'EOF'
status = warn
shutdownHook = disable
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
)
  if [ -f "$f" ] && [ "$(cat "$f")" = "$want" ]; then return 0; fi
  mkdir -p "$HOME_DIR/config"
  echo "$want" >"$f.$$"
  mv -f "$f.$$" "$f"
}

# --- configuration ------------------------------------------------------------------------

make_dir() {
  if ! mkdir -p "$DIR" 2>/dev/null || [ ! -w "$DIR" ]; then
    as_root mkdir -p "$DIR"
    as_root chown "$(id -u):$(id -g)" "$DIR"
  fi
  mkdir -p "$LOGDIR" "$DATA"
}

# Written on every start, so the ports follow the environment.
write_config() {
  cat >"$CONF" <<EOF
# Written by scripts/kafka.sh; edits are overwritten on the next start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DATA
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
  cat >"$LOG4J_CONF" <<'EOF'
# Written by scripts/kafka.sh. The broker logs to stdout, which goes to logs/server.log.
status = warn
shutdownHook = disable
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

format_storage() {
  if [ -f "$DATA/meta.properties" ]; then return 0; fi
  local id out
  id=$(java -cp "$LIBS/*" -Dlog4j2.configurationFile="$HOME_DIR/config/tools-log4j2.properties" \
    kafka.tools.StorageTool random-uuid)
  log "formatting $DATA (cluster id $id)"
  if ! out=$(java -cp "$LIBS/*" -Dlog4j2.configurationFile="$HOME_DIR/config/tools-log4j2.properties" \
    kafka.tools.StorageTool format --cluster-id "$id" --config "$CONF" --ignore-formatted 2>&1); then
    echo "$out" >&2
    die "formatting $DATA failed"
  fi
}

# --- process state ------------------------------------------------------------------------

# Prints the pid of the broker that runs with $CONF, if any.
broker_pid() {
  local pid cmd
  if [ -f "$PIDFILE" ]; then
    pid=$(cat "$PIDFILE")
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)
    if [[ "$cmd" == *" kafka.Kafka $CONF " ]]; then echo "$pid"; return 0; fi
  fi
  # No (valid) pid file: look for a broker started with our config anyway.
  for f in /proc/[0-9]*/cmdline; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$f" || true)
    if [[ "$cmd" == *" kafka.Kafka $CONF " ]]; then
      pid=${f#/proc/}; echo "${pid%/cmdline}"; return 0
    fi
  done
  return 1
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

# True when the broker port answers a Kafka ApiVersions request (v0, correlation id 1); the
# broker only answers once it has finished starting.
kafka_answers() {
  timeout 3 bash -c '
    exec 3<>/dev/tcp/'"$HOST/$PORT"' || exit 1
    printf "\x00\x00\x00\x0f\x00\x12\x00\x00\x00\x00\x00\x01\x00\x05ready" >&3
    reply=$(head -c 8 <&3 | od -An -tx1 | tr -d " \n")
    [ "${reply:8:8}" = 00000001 ]
  ' 2>/dev/null
}

log_since_start() {
  local off=0
  [ -f "$LOG_OFFSET" ] && off=$(cat "$LOG_OFFSET")
  tail -c +"$((off + 1))" "$LOG" 2>/dev/null || true
}

show_log_tail() {
  # The reason a broker stopped is usually far above its shutdown lines.
  local errors
  errors=$(log_since_start | grep -E ' (ERROR|FATAL) |Exception:' | head -n 20)
  if [ -n "$errors" ]; then
    log "errors in $LOG:"
    printf '%s\n' "$errors" >&2
  fi
  log "last lines of $LOG:"
  log_since_start | tail -n 40 >&2
}

# Waits until the broker $1 logged "Kafka Server started" and answers requests.
wait_ready() {
  local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log_tail
      die "Kafka (pid $pid) exited during startup"
    fi
    if grep -q 'Kafka Server started' <(log_since_start) && kafka_answers; then
      log "Kafka $KAFKA_VERSION is up on $HOST:$PORT (pid $pid)"
      return 0
    fi
    sleep 0.5
  done
  show_log_tail
  die "Kafka (pid $pid) was not ready on $HOST:$PORT after ${START_TIMEOUT}s"
}

# --- commands -----------------------------------------------------------------------------

lock_dir() {
  make_dir
  exec 9>"$DIR/.lock"
  flock -w 300 9 || die "timed out waiting for another scripts/kafka.sh on $DIR"
}

do_start() { # $1: ensure|start
  local pid
  lock_dir
  if pid=$(broker_pid); then
    wait_ready "$pid"
    return 0
  fi
  if kafka_answers; then
    [ "$1" = ensure ] && return 0
    die "$HOST:$PORT already answers, but not a broker started by this script with $CONF"
  fi
  port_open "$PORT" && die "$HOST:$PORT is taken by another process"
  port_open "$CONTROLLER_PORT" && die "$HOST:$CONTROLLER_PORT is taken by another process"
  install_libs
  need_tools
  write_config
  format_storage
  # Keep one old log around instead of growing forever.
  if [ -f "$LOG" ] && [ "$(stat -c %s "$LOG")" -gt $((64 * 1024 * 1024)) ]; then
    mv -f "$LOG" "$LOG.1"
  fi
  touch "$LOG"
  stat -c %s "$LOG" >"$LOG_OFFSET"
  log "starting Kafka $KAFKA_VERSION on $HOST:$PORT (data in $DIR)"
  # setsid: own session, so the broker outlives the caller's terminal and process group.
  # 9>&- 8>&-: the broker must not inherit (and hold) the lock files.
  (cd "$DIR" && exec setsid nohup java "${JAVA_OPTS[@]}" -Dlog4j2.configurationFile="$LOG4J_CONF" \
    -Dkafka.logs.dir="$LOGDIR" -cp "$LIBS/*" kafka.Kafka "$CONF" \
    >>"$LOG" 2>&1 </dev/null 9>&- 8>&-) &
  echo "$!" >"$PIDFILE"
  # $! is the broker itself unless setsid had to fork; then find it by its command line.
  for _ in $(seq 1 50); do
    if pid=$(broker_pid); then break; fi
    sleep 0.1
  done
  [ -n "$pid" ] || { show_log_tail; die "Kafka did not start"; }
  echo "$pid" >"$PIDFILE"
  wait_ready "$pid"
}

do_stop() {
  local pid
  lock_dir
  if ! pid=$(broker_pid); then
    rm -f "$PIDFILE"
    log "Kafka is not running ($DIR)"
    return 0
  fi
  log "stopping Kafka (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "Kafka (pid $pid) still running after 30 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$PIDFILE"
  log "Kafka stopped"
}

do_status() {
  local pid
  if pid=$(broker_pid); then
    if kafka_answers; then echo "running: pid $pid, ready on $HOST:$PORT, data in $DIR"; return 0; fi
    echo "starting: pid $pid, not answering on $HOST:$PORT yet"
    return 3
  fi
  if kafka_answers; then echo "running: a broker not started by this script answers on $HOST:$PORT"; return 0; fi
  echo "stopped (data in $DIR)"
  return 3
}

cmd=${1:-ensure}
[ $# -gt 0 ] && shift
case "$cmd" in
  ensure)
    if kafka_answers; then exit 0; fi
    do_start ensure
    ;;
  start) do_start start ;;
  stop) do_stop ;;
  restart) do_stop; do_start start ;;
  status) do_status ;;
  classpath) install_libs; echo "$LIBS/*" ;;
  tool)
    [ $# -gt 0 ] || die "usage: scripts/kafka.sh tool CLASS [ARGS...]"
    install_libs
    need_tools
    exec java -Xmx256m -Dlog4j2.configurationFile="$HOME_DIR/config/tools-log4j2.properties" \
      -cp "$LIBS/*" "$@"
    ;;
  *) die "unknown command '$cmd' (ensure|start|stop|restart|status|classpath|tool)" ;;
esac
