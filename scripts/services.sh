#!/usr/bin/env bash
# Makes sure the servers the tests talk to are installed and running on this machine:
# PostgreSQL on 127.0.0.1:5432 (user postgres, trust on loopback) and Redis on
# 127.0.0.1:6379 (plus the redis-server binary, which tests also start privately), and
# Kafka on 127.0.0.1:9092 (scripts/kafka.sh, which tests also use to stop and restart it),
# and the nginx and prometheus binaries (not started).
# Idempotent: does nothing when a server already answers. Needs root (or sudo) only when
# something is missing.
set -euo pipefail

log() { echo "scripts/services.sh: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# wait_up NAME CHECK: polls CHECK for up to 30 s.
wait_up() {
  for _ in $(seq 1 120); do
    if "$2"; then log "$1 is up"; return 0; fi
    sleep 0.25
  done
  log "$1 did not come up"
  return 1
}

pg_ok() { psql "postgres://postgres@127.0.0.1:5432/postgres" -Atqc 'select 1' >/dev/null 2>&1; }

ensure_postgres() {
  if pg_ok; then return 0; fi
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    log "installing postgresql"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
  local version cluster
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
    log "creating cluster $version/main"
    as_root pg_createcluster "$version" main >/dev/null
  fi
  cluster="$version main"
  # Trust local TCP connections for the test user (this is a test machine).
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    log "allowing trust auth on loopback in $hba"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting postgresql $cluster"
  as_root pg_ctlcluster --skip-systemctl-redirect $cluster start 2>/dev/null || as_root pg_ctlcluster --skip-systemctl-redirect $cluster reload || true
  wait_up "postgresql on 127.0.0.1:5432" pg_ok
}

redis_ok() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]
  else
    # No client: speak the protocol by hand.
    exec 3<>/dev/tcp/127.0.0.1/6379 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    local reply
    read -r -t 2 reply <&3 || true
    exec 3>&-
    [[ "$reply" == +PONG* ]]
  fi
}

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
  fi
  if redis_ok; then return 0; fi
  log "starting redis on 127.0.0.1:6379"
  local dir=/var/lib/redis logdir=/var/log/redis
  as_root mkdir -p "$dir" "$logdir"
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir "$dir" --logfile "$logdir/ci.log"
  wait_up "redis on 127.0.0.1:6379" redis_ok
}

# nginx is the front proxy of deploy/local-cluster.sh and tests/front_proxy.rs; they start
# their own, so only the binary is installed (Debian's own service is not started).
ensure_nginx() {
  if [ -x /usr/sbin/nginx ]; then return 0; fi
  log "installing nginx-light"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
}

# Prometheus and promtool check the alert rules and the dashboards (tests/local_cluster.rs
# runs its own Prometheus); Debian's service is not started.
ensure_prometheus() {
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then return 0; fi
  log "installing prometheus"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

ensure_kafka() { bash "$(dirname "${BASH_SOURCE[0]}")/kafka.sh" ensure; }

ensure_postgres
ensure_redis
ensure_nginx
ensure_prometheus
ensure_kafka
