#!/usr/bin/env bash
# Install what medenc's browser tests need (the reader-study viewer is tested in a real headless browser):
#   - Debian's chromium at /usr/bin/chromium (apt-get, only if missing; needs root)
#   - the playwright Python package in the venv (pip, only if missing)
# Playwright drives the system chromium (executable_path=/usr/bin/chromium): `playwright install` is never
# run, so no browser is downloaded from the network. Idempotent: a second run changes nothing.
# Environment: MEDENC_VENV (default: .venv beside the repository root).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MEDENC_VENV:-$here/.venv}"

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-browser: /usr/bin/chromium missing and not root; run: sudo apt-get install -y chromium" >&2
    exit 1
  fi
  echo "install-browser: installing Debian chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends chromium
fi

if [ -x "$venv/bin/python" ]; then
  if ! "$venv/bin/python" -c "import playwright.sync_api" 2>/dev/null; then
    echo "install-browser: installing the playwright Python package into $venv" >&2
    "$venv/bin/python" -m pip --disable-pip-version-check -q install "playwright>=1.40"
  fi
else
  echo "install-browser: no venv at $venv; skipped the playwright package (run ./run.sh setup first)" >&2
fi

echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo "chromium does not start")" >&2
