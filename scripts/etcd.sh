#!/usr/bin/env bash
# Installs etcd 3.4 (Debian's etcd-server and etcd-client) for `artstore bench admin`, which
# starts its own three-node etcd cluster on free loopback ports as the baseline. Starts no
# daemon: while installing, a policy-rc.d that refuses service starts is put in place (when
# the machine has none), and should the package's postinst have started a default etcd on
# 127.0.0.1:2379 anyway, it is stopped again.
# Idempotent: does nothing when `etcd` is already on PATH. Needs root (or sudo) only when
# it is missing.
set -euo pipefail

log() { echo "scripts/etcd.sh: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The pids of etcd processes listening on TCP port 2379 (none when ss is missing).
etcd_on_2379() {
  command -v ss >/dev/null 2>&1 || return 0
  as_root ss -Hltnp 'sport = :2379' 2>/dev/null | grep -o '"etcd",pid=[0-9]*' | cut -d= -f2 | sort -u || true
}

stop_default_etcd() {
  local pids
  pids=$(etcd_on_2379)
  [ -z "$pids" ] && return 0
  log "the package started a default etcd on 2379 (pid $(echo $pids)); stopping it"
  as_root service etcd stop >/dev/null 2>&1 || true
  for _ in $(seq 1 40); do
    pids=$(etcd_on_2379)
    [ -z "$pids" ] && return 0
    sleep 0.25
  done
  # shellcheck disable=SC2086 # one pid per word
  as_root kill $pids 2>/dev/null || true
  sleep 1
  pids=$(etcd_on_2379)
  if [ -n "$pids" ]; then
    log "etcd (pid $(echo $pids)) still listens on 2379"
    return 1
  fi
}

install_etcd() {
  log "installing etcd-server and etcd-client"
  local guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    # 101: "action not allowed", so invoke-rc.d starts nothing during the install.
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$guard" >/dev/null
    as_root chmod 755 "$guard"
  fi
  local rc=0
  as_root apt-get update -qq || rc=$?
  if [ "$rc" = 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      etcd-server etcd-client >/dev/null || rc=$?
  fi
  if [ -n "$guard" ]; then as_root rm -f "$guard"; fi
  [ "$rc" = 0 ] || return "$rc"
  stop_default_etcd
}

command -v etcd >/dev/null 2>&1 || install_etcd
log "$(etcd --version 2>/dev/null | head -n1) at $(command -v etcd)"
