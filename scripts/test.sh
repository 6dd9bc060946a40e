#!/usr/bin/env bash
# Runs the whole ArtStore test suite. Idempotent: installs and starts what the tests need
# when it is missing (PostgreSQL, Redis, cargo-nextest), then runs every test of every crate.
# Extra arguments go to nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL (cache tests) and Redis (discovery tests): a missing server is a failure,
# never a skip.
scripts/services.sh

# Chromium, its driver, a font and Playwright for the browser end-to-end test
# (tests/ui_e2e.rs); a missing browser fails that test, never skips it.
scripts/browser.sh

# The stock tus client (tuspy) that tests/tus_stock_client.rs drives; a missing one fails
# that test, never skips it.
if ! python3 -c 'import tusclient' >/dev/null 2>&1; then
  echo "scripts/test.sh: installing tuspy" >&2
  python3 -m pip install --quiet tuspy
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "scripts/test.sh: installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

cargo nextest run --workspace --no-fail-fast "$@"
