#!/usr/bin/env bash
# Install the DICOM validator medenc's tests run on every kind of DICOM file medenc writes:
#   - Debian's dicom3tools (dciodvfy at /usr/bin/dciodvfy; apt-get, only if missing; needs root)
# Idempotent: a second run changes nothing. Tests that need dciodvfy skip (with the reason) without it.
set -euo pipefail

if ! command -v dciodvfy >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-dicom3tools: dciodvfy missing and not root; run: sudo apt-get install -y dicom3tools" >&2
    exit 1
  fi
  echo "install-dicom3tools: installing Debian dicom3tools" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q || true
  apt-get install -y -q --no-install-recommends dicom3tools
fi
echo "install-dicom3tools: $(command -v dciodvfy)" >&2
