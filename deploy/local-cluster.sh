#!/usr/bin/env bash
# A complete ArtStore cluster on this machine, on loopback ports, from the built binary:
# 3 admin nodes (Raft), 2 storage elements (se-1 in `edit`, se-2 in `rw`) each with its own
# PostgreSQL cache database, an ingester, a query role, Redis, a Kafka broker, and an nginx
# front proxy that routes the public API by the routing table (`artstore proxy-config`),
# exactly as `artstore standalone` does on its one port.
#
# Usage: deploy/local-cluster.sh up|down [--purge]|status|logs [NAME [-f]]|env
#   up       start whatever is not running (idempotent), wait until every part is ready,
#            print the front URL and the admin password
#   down     stop what this script started (by its PID files), keep the data;
#            --purge also deletes the cluster folder
#   status   one line per part: pid, running or stopped, health; exit 3 when any is down
#   logs     the log files; with NAME (admin-1, se-2, ingester, query, nginx, redis,
#            postgres, kafka, …) its last 200 lines, -f to follow
#   env      shell assignments of the cluster's URLs and secrets (eval "$(… env)")
#   start NAME / stop NAME / kill NAME
#            start one part, stop it (SIGTERM), or SIGKILL it (for fault drills; PostgreSQL's
#            postmaster is killed with its backends, Kafka's broker JVM by its PID file)
#
# Environment:
#   ARTSTORE_BIN            the binary (default: cargo build --release, target/release/artstore)
#   ARTSTORE_CLUSTER_DIR    everything the cluster writes (default: <repo>/.local-cluster)
#   ARTSTORE_CLUSTER_PORT   base port (default 18000): admin +1..+3, se-1 +11, se-2 +12,
#                           ingester +21, query +31, postgres +32, redis +79, front +80,
#                           kafka +92 (controller +93)
#   ARTSTORE_ADMIN_PASSWORD the admin's password on first start (default: generated, kept
#                           in <dir>/secrets/admin-password)
#   ARTSTORE_CLUSTER_TLS=1  on the first `up`: TLS mode. A private CA and a certificate for
#                           127.0.0.1/localhost are made in <dir>/tls (openssl); every role
#                           and the front proxy serve HTTPS only (plain HTTP is refused), every
#                           call between roles and from the proxy checks certificates against
#                           that CA (`--tls-ca`). The cluster stays in TLS mode afterwards.
#                           PostgreSQL, Redis and Kafka stay on plain loopback.
# Installs what is missing (nginx-light, redis-server, postgresql, and Kafka through
# scripts/kafka.sh) with apt; needs root or sudo only then.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${ARTSTORE_CLUSTER_DIR:-$ROOT/.local-cluster}
BASE=${ARTSTORE_CLUSTER_PORT:-18000}
H=127.0.0.1
RUN=$DIR/run
LOGS=$DIR/logs
SECRETS=$DIR/secrets

ADMIN_PORTS=($((BASE + 1)) $((BASE + 2)) $((BASE + 3)))
SE_IDS=(se-1 se-2)
SE_MODES=(edit rw)
SE_PORTS=($((BASE + 11)) $((BASE + 12)))
INGESTER_PORT=$((BASE + 21))
QUERY_PORT=$((BASE + 31))
PG_PORT=$((BASE + 32))
REDIS_PORT=$((BASE + 79))
FRONT_PORT=$((BASE + 80))
KAFKA_PORT=$((BASE + 92))
KAFKA_CONTROLLER_PORT=$((BASE + 93))
TLS_DIR=$DIR/tls
if [ "${ARTSTORE_CLUSTER_TLS:-0}" = 1 ] || [ -f "$TLS_DIR/cert.pem" ]; then TLS=1; else TLS=0; fi
if [ $TLS = 1 ]; then
  SCHEME=https
  CURL=(curl --cacert "$TLS_DIR/ca.pem")
  ROLE_TLS=(--tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem" --tls-ca "$TLS_DIR/ca.pem")
else
  SCHEME=http
  CURL=(curl)
  ROLE_TLS=()
fi
FRONT=$SCHEME://$H:$FRONT_PORT
REDIS_URL=redis://$H:$REDIS_PORT
KAFKA=$H:$KAFKA_PORT
PEERS=1=$SCHEME://$H:${ADMIN_PORTS[0]},2=$SCHEME://$H:${ADMIN_PORTS[1]},3=$SCHEME://$H:${ADMIN_PORTS[2]}
QUERY_CLIENT=query

log() { echo "local-cluster: $*" >&2; }
die() { log "$*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- installation -------------------------------------------------------------------------

install_missing() {
  local pkgs=()
  [ -x /usr/sbin/nginx ] || pkgs+=(nginx-light)
  command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || pkgs+=(postgresql)
  command -v psql >/dev/null 2>&1 || pkgs+=(postgresql-client)
  command -v curl >/dev/null 2>&1 || pkgs+=(curl)
  command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
  [ $TLS = 0 ] || command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]}"
    as_root apt-get update -qq
    # Debian starts a freshly installed server's own service; the cluster runs its own.
    as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
}

binary() {
  if [ -n "${ARTSTORE_BIN:-}" ]; then
    [ -x "$ARTSTORE_BIN" ] || die "ARTSTORE_BIN=$ARTSTORE_BIN is not an executable"
    echo "$ARTSTORE_BIN"
    return
  fi
  log "building the release binary (cargo build --release)"
  (cd "$ROOT" && cargo build --release --quiet --bin artstore) >&2 || die "cargo build failed"
  echo "$ROOT/target/release/artstore"
}

# --- processes ----------------------------------------------------------------------------

pidfile() { echo "$RUN/$1.pid"; }

# alive NAME: the process in NAME's PID file runs and is ours (its command line names the
# cluster folder, or for Redis its port), so a reused PID is never taken for it.
alive() {
  local f pid
  f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  if [ "$1" = redis ]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "redis-server.*:$REDIS_PORT"
  else
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$DIR"
  fi
}

# spawn NAME ENV... -- CMD...: starts CMD in the background with its output in logs/NAME.log.
spawn() {
  local name=$1
  shift
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  if alive "$name"; then return 0; fi
  echo "=== $(date -u +%FT%TZ) start: $*" >>"$LOGS/$name.log"
  env "${envs[@]}" setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
  log "started $name (pid $!)"
}

# running PID: the process exists and has not exited (a zombie waiting for its parent, or
# for an init that reaps only now and then, has ended).
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# stop_pid NAME SIGNAL: signals the process and waits up to 30 s for it to end.
stop_pid() {
  local name=$1 sig=${2:-TERM} pid
  alive "$name" || { rm -f "$(pidfile "$name")"; return 0; }
  pid=$(cat "$(pidfile "$name")")
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    running "$pid" || break
    sleep 0.1
  done
  if running "$pid"; then
    log "$name (pid $pid) did not stop in 30 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$(pidfile "$name")"
  log "stopped $name"
}

# wait_http NAME URL [SECONDS]: until URL answers 2xx.
wait_http() {
  local name=$1 url=$2 limit=${3:-60}
  for _ in $(seq 1 $((limit * 5))); do
    if "${CURL[@]}" -fs -o /dev/null --max-time 2 "$url"; then return 0; fi
    if [ "$name" != - ] && ! alive "$name"; then
      tail -n 30 "$LOGS/$name.log" >&2 || true
      die "$name exited; its log is $LOGS/$name.log"
    fi
    sleep 0.2
  done
  tail -n 30 "$LOGS/$name.log" >&2 2>/dev/null || true
  die "$name did not answer $url within ${limit}s (log: $LOGS/$name.log)"
}

# Until the ingester sees both elements up (heartbeats in Redis, registry from the admin).
wait_elements_up() {
  local up=0
  for _ in $(seq 1 300); do
    up=$("${CURL[@]}" -s --max-time 2 "$(health_url ingester)" |
      python3 -c 'import json,sys; print(json.load(sys.stdin).get("elements_up", 0))' 2>/dev/null || echo 0)
    [ "$up" -ge ${#SE_IDS[@]} ] && return 0
    sleep 0.2
  done
  die "the ingester sees $up of ${#SE_IDS[@]} elements up after 60 s (logs: $LOGS/ingester.log, se-*.log)"
}

secret() {
  local f=$SECRETS/$1
  if [ ! -s "$f" ]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$f")
  fi
  cat "$f"
}

json_field() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }

# --- parts --------------------------------------------------------------------------------

PG_BIN=
pg_bin() {
  [ -n "$PG_BIN" ] || PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  echo "$PG_BIN"
}
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_postgres() {
  local data=$DIR/postgres
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$data"
    as_postgres "$(pg_bin)/initdb" -A trust -U postgres -D "$data" >"$LOGS/postgres-initdb.log" 2>&1 ||
      { cat "$LOGS/postgres-initdb.log" >&2; die "initdb failed"; }
  fi
  if ! as_postgres "$(pg_bin)/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_postgres "$(pg_bin)/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-p $PG_PORT -k $data -c listen_addresses=$H" start >/dev/null ||
      { tail -n 20 "$data/server.log" >&2; die "PostgreSQL did not start"; }
    log "started postgres on $H:$PG_PORT"
  fi
  for id in "${SE_IDS[@]}"; do
    local db=artstore_${id//-/_}
    if [ -z "$(psql "postgres://postgres@$H:$PG_PORT/postgres" -Atqc "select 1 from pg_database where datname = '$db'")" ]; then
      psql "postgres://postgres@$H:$PG_PORT/postgres" -qc "create database $db" >/dev/null
    fi
  done
}

stop_postgres() {
  local data=$DIR/postgres
  [ -f "$data/PG_VERSION" ] || return 0
  if as_postgres "$(pg_bin)/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_postgres "$(pg_bin)/pg_ctl" -D "$data" -m fast -w stop >/dev/null && log "stopped postgres"
  fi
}

kafka() {
  ARTSTORE_KAFKA_DIR=$DIR/kafka ARTSTORE_KAFKA_PORT=$KAFKA_PORT \
    ARTSTORE_KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT bash "$ROOT/scripts/kafka.sh" "$@"
}

start_redis() {
  alive redis && return 0
  mkdir -p "$DIR/redis"
  redis-server --daemonize yes --bind $H --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$DIR/redis" --pidfile "$(pidfile redis)" --logfile "$LOGS/redis.log" >/dev/null
  for _ in $(seq 1 100); do alive redis && break; sleep 0.1; done
  alive redis || die "redis did not start (log: $LOGS/redis.log)"
  log "started redis on $H:$REDIS_PORT"
}

# The private CA and one certificate for every role and the proxy (127.0.0.1, localhost),
# made once with openssl.
make_tls() {
  [ $TLS = 1 ] || return 0
  [ -f "$TLS_DIR/cert.pem" ] && return 0
  mkdir -p "$TLS_DIR"
  (
    umask 077
    cd "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj "/CN=ArtStore local cluster CA" -keyout ca-key.pem -out ca.pem \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
      -keyout key.pem -out cert.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' >cert.ext
    openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
      -extfile cert.ext -out cert.pem 2>/dev/null
    rm -f cert.csr cert.ext
    chmod 644 ca.pem cert.pem
  ) || die "making the cluster's CA and certificate failed (openssl)"
  log "made a private CA and a certificate for $H/localhost in $TLS_DIR"
}

nginx_conf() {
  local admins="" d=$DIR/nginx
  for p in "${ADMIN_PORTS[@]}"; do admins+="${admins:+,}$H:$p"; done
  mkdir -p "$d"
  local tls=()
  [ $TLS = 0 ] || tls=(--tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem"
    --upstream-ca "$TLS_DIR/ca.pem" --upstream-name localhost)
  "$BIN" proxy-config --listen "$H:$FRONT_PORT" --admin "$admins" --ingester "$H:$INGESTER_PORT" \
    --query "$H:$QUERY_PORT" "${tls[@]}" >"$d/artstore.conf"
  cat >"$d/nginx.conf" <<EOF
# Written by deploy/local-cluster.sh; artstore.conf is \`artstore proxy-config\`'s output.
$([ "$(id -u)" = 0 ] && echo "user root;")
worker_processes 2;
pid $RUN/nginx.pid;
error_log $LOGS/nginx.log warn;
events { worker_connections 1024; }
http {
  access_log $LOGS/nginx-access.log;
  client_body_temp_path $d/tmp-body;
  proxy_temp_path $d/tmp-proxy;
  fastcgi_temp_path $d/tmp-fcgi;
  uwsgi_temp_path $d/tmp-uwsgi;
  scgi_temp_path $d/tmp-scgi;
  include $d/artstore.conf;
}
EOF
}

start_nginx() {
  alive nginx && return 0
  nginx_conf
  /usr/sbin/nginx -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -t -q || die "nginx refused $DIR/nginx/nginx.conf"
  /usr/sbin/nginx -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" || die "nginx did not start (log: $LOGS/nginx.log)"
  for _ in $(seq 1 50); do alive nginx && break; sleep 0.1; done
  log "started nginx on $FRONT"
}

start_admin() {
  local i=$1 port=${ADMIN_PORTS[$(($1 - 1))]}
  spawn "admin-$i" ARTSTORE_ADMIN_PASSWORD="$(secret admin-password)" -- \
    "$BIN" admin --node-id "$i" --listen "$H:$port" --data "$DIR/admin-$i" --peers "$PEERS" \
    --redis "$REDIS_URL" --cluster-secret "$(secret cluster-secret)" --ui-api "$FRONT" --trusted-proxies $H --log-format json \
    "${ROLE_TLS[@]}"
}

start_element() {
  local n=$1 id=${SE_IDS[$1]} port=${SE_PORTS[$1]}
  spawn "$id" -- "$BIN" storage-element --data "$DIR/$id" --listen "$H:$port" \
    --jwks "$FRONT/.well-known/jwks.json" --admin "$FRONT" --redis "$REDIS_URL" --element-id "$id" \
    --initial-mode "${SE_MODES[$n]}" --cache "postgres://postgres@$H:$PG_PORT/artstore_${id//-/_}" \
    --kafka "$KAFKA" --log-format json --public-url "$SCHEME://$H:$port" "${ROLE_TLS[@]}"
}

start_ingester() {
  spawn ingester -- "$BIN" ingester --listen "$H:$INGESTER_PORT" --data "$DIR/ingester" \
    --jwks "$FRONT/.well-known/jwks.json" --admin "$FRONT" --redis "$REDIS_URL" --trusted-proxies $H \
    --log-format json "${ROLE_TLS[@]}"
}

start_query() {
  spawn query ARTSTORE_CLIENT_SECRET="$(cat "$SECRETS/query-client-secret")" -- \
    "$BIN" query --listen "$H:$QUERY_PORT" --index "$DIR/query" --jwks "$FRONT/.well-known/jwks.json" \
    --admin "$FRONT" --client-id "$QUERY_CLIENT" --redis "$REDIS_URL" --kafka "$KAFKA" --trusted-proxies $H \
    --log-format json "${ROLE_TLS[@]}"
}

admin_token() {
  local t
  for _ in $(seq 1 60); do
    if t=$("${CURL[@]}" -fsS --max-time 10 -d grant_type=password -d username=admin \
      --data-urlencode "password=$(secret admin-password)" "$FRONT/api/v1/auth/token" 2>/dev/null | json_field access_token 2>/dev/null) &&
      [ -n "$t" ]; then
      echo "$t"
      return 0
    fi
    sleep 0.5
  done
  return 1
}

# api METHOD PATH JSON: prints "<status> <body>".
api() {
  "${CURL[@]}" -sS --max-time 15 -X "$1" -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "$3" -w '\n%{http_code}' "$FRONT$2"
}

# api_retry METHOD PATH JSON: api, again while the admin cluster answers 503 (an election
# under way right after start) or not at all, for up to 30 s.
api_retry() {
  local out status
  for _ in $(seq 1 60); do
    out=$(api "$@") || true
    status=${out##*$'\n'}
    case $status in
      503 | 000 | '') sleep 0.5 ;;
      *) break ;;
    esac
  done
  printf '%s' "$out"
}

# The registry entries and the query role's service account, once.
register() {
  TOKEN=$(admin_token) || die "cannot get an admin token from $FRONT"
  local out status
  for n in 0 1; do
    out=$(api_retry POST /api/v1/elements "{\"id\": \"${SE_IDS[$n]}\", \"url\": \"$SCHEME://$H:${SE_PORTS[$n]}\", \"weight\": 1}")
    status=${out##*$'\n'}
    case $status in
      201) log "registered ${SE_IDS[$n]}" ;;
      409) ;;
      *) die "registering ${SE_IDS[$n]}: $out" ;;
    esac
  done
  if [ ! -s "$SECRETS/query-client-secret" ]; then
    out=$(api_retry POST /api/v1/service-accounts "{\"client_id\": \"$QUERY_CLIENT\", \"roles\": [\"reader\"]}")
    status=${out##*$'\n'}
    if [ "$status" = 409 ]; then
      out=$(api_retry PATCH "/api/v1/service-accounts/$QUERY_CLIENT" '{"rotate_secret": true}')
      status=${out##*$'\n'}
    fi
    case $status in
      200 | 201) (umask 077; echo "${out%$'\n'*}" | json_field client_secret >"$SECRETS/query-client-secret") ;;
      *) die "creating the query role's service account: $out" ;;
    esac
    log "service account $QUERY_CLIENT ready"
  fi
}

ADMIN_NAMES=(admin-1 admin-2 admin-3)
ARTSTORE_NAMES=("${ADMIN_NAMES[@]}" se-1 se-2 ingester query)

health_url() {
  case $1 in
    admin-[123]) echo "$SCHEME://$H:${ADMIN_PORTS[$((${1#admin-} - 1))]}/health/ready" ;;
    se-1) echo "$SCHEME://$H:${SE_PORTS[0]}/health/ready" ;;
    se-2) echo "$SCHEME://$H:${SE_PORTS[1]}/health/ready" ;;
    ingester) echo "$SCHEME://$H:$INGESTER_PORT/health/ready" ;;
    query) echo "$SCHEME://$H:$QUERY_PORT/health/ready" ;;
    nginx) echo "$FRONT/.well-known/jwks.json" ;;
  esac
}

start_one() {
  case $1 in
    admin-[123]) start_admin "${1#admin-}" ;;
    se-1) start_element 0 ;;
    se-2) start_element 1 ;;
    ingester) start_ingester ;;
    query) start_query ;;
    nginx) start_nginx ;;
    redis) start_redis ;;
    postgres) start_postgres ;;
    kafka) kafka start >/dev/null ;;
    *) die "no part named $1" ;;
  esac
}

stop_one() {
  case $1 in
    postgres) stop_postgres ;;
    kafka) kafka stop ;;
    *) stop_pid "$1" "${2:-TERM}" ;;
  esac
}

# kill_pids NAME PID...: SIGKILL, and wait until every one of them is gone.
kill_pids() {
  local name=$1 pid
  shift
  [ $# -gt 0 ] || { log "$name is not running"; return 0; }
  kill -KILL "$@" 2>/dev/null || true
  for pid in "$@"; do
    while running "$pid"; do sleep 0.05; done
  done
  log "killed $name (pid $*)"
}

# kill_one NAME: SIGKILL, as a crash would. PostgreSQL: the postmaster and every backend
# (a lone killed postmaster leaves backends holding the shared memory, and the next start
# waits for them); Kafka: the broker in scripts/kafka.sh's PID file.
kill_one() {
  local pid pids=()
  case $1 in
    postgres)
      pid=$(head -n1 "$DIR/postgres/postmaster.pid" 2>/dev/null) || true
      if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$DIR/postgres"; then
        pids=("$pid" $(ps -o pid= --ppid "$pid"))
      fi
      kill_pids postgres "${pids[@]}"
      # pg_ctl, and the next postmaster's lock-file check, take a zombie for a live server:
      # wait until it is reaped.
      for _ in $(seq 1 600); do
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
      done
      ;;
    kafka)
      pid=$(cat "$DIR/kafka/kafka.pid" 2>/dev/null) || true
      if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$DIR/kafka"; then
        pids=("$pid")
      fi
      kill_pids kafka "${pids[@]}"
      ;;
    *) stop_pid "$1" KILL ;;
  esac
}

# --- commands -----------------------------------------------------------------------------

up() {
  install_missing
  BIN=$(binary)
  mkdir -p "$RUN" "$LOGS" "$SECRETS"
  [ -n "${ARTSTORE_ADMIN_PASSWORD:-}" ] && [ ! -s "$SECRETS/admin-password" ] &&
    (umask 077; printf '%s' "$ARTSTORE_ADMIN_PASSWORD" >"$SECRETS/admin-password")
  echo "$BIN" >"$DIR/binary"
  make_tls
  start_redis
  start_postgres
  kafka start >/dev/null || die "Kafka did not start (log: $DIR/kafka/logs/server.log)"
  for i in 1 2 3; do start_admin "$i"; done
  for n in "${ADMIN_NAMES[@]}"; do wait_http "$n" "$(health_url "$n")" 90; done
  start_nginx
  wait_http nginx "$FRONT/.well-known/jwks.json" 30
  register
  start_element 0
  start_element 1
  start_ingester
  start_query
  for n in se-1 se-2 ingester query; do wait_http "$n" "$(health_url "$n")" 90; done
  wait_elements_up
  echo "front:    $FRONT/"
  echo "admin password: $(secret admin-password)"
  echo "(user admin; $0 status|logs|down; data in $DIR)"
}

down() {
  for n in query ingester se-2 se-1 nginx admin-3 admin-2 admin-1 redis; do stop_pid "$n"; done
  kafka stop 2>/dev/null || true
  stop_postgres
  if [ "${1:-}" = --purge ]; then
    rm -rf "$DIR"
    log "deleted $DIR"
  fi
}

status() {
  local bad=0 pid state health
  printf '%-10s %-8s %-8s %s\n' PART PID STATE HEALTH
  for n in redis nginx "${ARTSTORE_NAMES[@]}"; do
    pid=$(cat "$(pidfile "$n")" 2>/dev/null || echo -)
    if alive "$n"; then state=running; else state=stopped; bad=1; pid=-; fi
    health=-
    if [ "$state" = running ] && [ -n "$(health_url "$n")" ]; then
      health=$("${CURL[@]}" -s -o /dev/null --max-time 3 -w '%{http_code}' "$(health_url "$n")" || true)
      [ "$health" = 200 ] || bad=1
    fi
    printf '%-10s %-8s %-8s %s\n' "$n" "$pid" "$state" "$health"
  done
  if as_postgres "$(pg_bin)/pg_ctl" -D "$DIR/postgres" status >/dev/null 2>&1; then
    printf '%-10s %-8s %-8s %s\n' postgres "$(head -n1 "$DIR/postgres/postmaster.pid")" running "$H:$PG_PORT"
  else
    printf '%-10s %-8s %-8s %s\n' postgres - stopped -
    bad=1
  fi
  if kafka status >/dev/null 2>&1; then
    printf '%-10s %-8s %-8s %s\n' kafka "$(cat "$DIR/kafka/kafka.pid" 2>/dev/null || echo -)" running "$KAFKA"
  else
    printf '%-10s %-8s %-8s %s\n' kafka - stopped -
    bad=1
  fi
  echo "front: $FRONT/"
  return $((bad * 3))
}

logs() {
  if [ -z "${1:-}" ]; then
    ls -1 "$LOGS" 2>/dev/null | sed 's/\.log$//'
    echo "(also: $DIR/postgres/server.log, $DIR/kafka/logs/server.log)"
    return
  fi
  local f=$LOGS/$1.log
  [ "$1" = postgres ] && f=$DIR/postgres/server.log
  [ "$1" = kafka ] && f=$DIR/kafka/logs/server.log
  [ -f "$f" ] || die "no log named $1 (see: $0 logs)"
  if [ "${2:-}" = -f ]; then tail -n 200 -f "$f"; else tail -n 200 "$f"; fi
}

print_env() {
  cat <<EOF
ARTSTORE_FRONT=$FRONT
ARTSTORE_ADMIN_PASSWORD=$(cat "$SECRETS/admin-password" 2>/dev/null)
ARTSTORE_ADMIN_URLS=$SCHEME://$H:${ADMIN_PORTS[0]},$SCHEME://$H:${ADMIN_PORTS[1]},$SCHEME://$H:${ADMIN_PORTS[2]}
ARTSTORE_ELEMENT_URLS=se-1=$SCHEME://$H:${SE_PORTS[0]},se-2=$SCHEME://$H:${SE_PORTS[1]}
ARTSTORE_INGESTER_URL=$SCHEME://$H:$INGESTER_PORT
ARTSTORE_QUERY_URL=$SCHEME://$H:$QUERY_PORT
ARTSTORE_REDIS_URL=$REDIS_URL
ARTSTORE_KAFKA_BROKERS=$KAFKA
ARTSTORE_PG_URL=postgres://postgres@$H:$PG_PORT
ARTSTORE_CLUSTER_DIR=$DIR
$([ $TLS = 0 ] || echo "ARTSTORE_TLS_CA=$TLS_DIR/ca.pem")
EOF
}

case ${1:-} in
  up) up ;;
  down) down "${2:-}" ;;
  status) status ;;
  logs) logs "${2:-}" "${3:-}" ;;
  env) print_env ;;
  start)
    [ -n "${2:-}" ] || die "start NAME"
    BIN=$(cat "$DIR/binary" 2>/dev/null) || die "run up first"
    start_one "$2"
    [ -z "$(health_url "$2")" ] || wait_http "$2" "$(health_url "$2")" 90
    ;;
  stop) stop_one "${2:?stop NAME}" ;;
  kill) kill_one "${2:?kill NAME}" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
