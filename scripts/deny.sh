#!/usr/bin/env bash
# Runs `cargo deny check` (advisories, bans, licences, sources; rules and the reason for
# every exception in deny.toml) without network access: the advisory database is the
# RustSec snapshot beside the project (../shared/advisory-db, or ARTSTORE_ADVISORY_DB).
# cargo-deny reads a database from a git checkout under its db-path, so the snapshot is
# copied into target/advisory-dbs/ as a one-commit repository dated as the snapshot.
# Installs cargo-deny (a pinned version, from crates.io) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
SNAPSHOT=${ARTSTORE_ADVISORY_DB:-../shared/advisory-db}
# The folder cargo-deny uses for its default database URL (github.com/RustSec/advisory-db).
DB=target/advisory-dbs/advisory-db-3157b0e258782691

log() { echo "scripts/deny.sh: $*" >&2; }

if ! cargo deny --version 2>/dev/null | grep -q "$DENY_VERSION"; then
  log "installing cargo-deny $DENY_VERSION"
  cargo install --locked --quiet cargo-deny --version "$DENY_VERSION"
fi

# cargo-deny reads the manifest of every package in Cargo.lock, for every target (Windows,
# Android, …); a build fetches only the host's. Fetch the rest once (crates.io only).
cargo fetch --locked --quiet

if [ ! -d "$SNAPSHOT/crates" ]; then
  # Licences, bans and sources need no database; say loudly what was not checked.
  log "WARNING: no advisory database at $SNAPSHOT (set ARTSTORE_ADVISORY_DB): advisories NOT checked"
  cargo deny --offline check bans licenses sources
  exit
fi
stamp=$(head -c 200 "$SNAPSHOT/SNAPSHOT" 2>/dev/null | tr -d '\n' || true)
if [ ! -f "$DB/.snapshot" ] || [ "$(cat "$DB/.snapshot")" != "$stamp" ]; then
  log "preparing the advisory database from $SNAPSHOT ($stamp)"
  rm -rf "$DB"
  mkdir -p "$DB"
  cp -r "$SNAPSHOT"/. "$DB"/
  date=$(awk '{print $2}' "$SNAPSHOT/SNAPSHOT" 2>/dev/null || true)
  (
    cd "$DB"
    git init -q
    git add -A
    GIT_AUTHOR_DATE="${date:-now}T00:00:00Z" GIT_COMMITTER_DATE="${date:-now}T00:00:00Z" \
      git -c user.name=artstore -c user.email=ci@artstore.invalid commit -q -m "RustSec snapshot $stamp"
  )
  echo "$stamp" >"$DB/.snapshot"
fi

cargo deny --offline check "$@"
