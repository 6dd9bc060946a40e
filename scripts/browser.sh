#!/usr/bin/env bash
# Makes sure the browser end-to-end tests can run: Debian's Chromium with its driver and a
# font (without one Chromium aborts), and Playwright for Python (it drives the installed
# /usr/bin/chromium; it never downloads a browser). Idempotent; needs root (or sudo) only
# when something is missing.
set -euo pipefail

log() { echo "scripts/browser.sh: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
   || [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  log "installing chromium, chromium-driver and fonts-dejavu-core"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core >/dev/null
fi

if ! python3 -c 'import playwright.sync_api' >/dev/null 2>&1; then
  log "installing playwright (Python)"
  python3 -m pip install --quiet playwright
fi
log "chromium $(chromium --version 2>/dev/null | awk '{print $2}'), playwright ready"
