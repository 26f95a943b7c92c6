#!/usr/bin/env bash
# Install the real PACS medenc's DICOMweb tests run against:
#   - Debian's orthanc (the server, /usr/sbin/Orthanc) and orthanc-dicomweb (its DICOMweb plugin,
#     /usr/share/orthanc/plugins/libOrthancDicomWeb.so); apt-get, only if missing; needs root.
# The Debian package starts an `orthanc` service listening on all interfaces; it is stopped and disabled
# here when it runs (the tests start their own Orthanc inside a private network namespace with their own
# configuration: scripts/orthanc-netns.sh). Idempotent: a second run changes nothing.
# Tests that need Orthanc skip (with the reason) without it.
set -euo pipefail

plugin=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
if [ ! -x /usr/sbin/Orthanc ] || [ ! -f "$plugin" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-orthanc: Orthanc missing and not root; run: sudo apt-get install -y orthanc orthanc-dicomweb" >&2
    exit 1
  fi
  echo "install-orthanc: installing Debian orthanc and orthanc-dicomweb" >&2
  export DEBIAN_FRONTEND=noninteractive
  # no service start during the install (a policy-rc.d that forbids it), removed afterwards
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    made_policy=1
  fi
  trap '[ "$made_policy" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -q || true
  apt-get install -y -q --no-install-recommends orthanc orthanc-dicomweb
fi
# the packaged service would listen on all interfaces: make sure it is not running
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet orthanc 2>/dev/null; then
  systemctl disable --now orthanc >/dev/null 2>&1 || true
fi
version="$(/usr/sbin/Orthanc --version 2>/dev/null || echo "Orthanc does not start")"
echo "install-orthanc: ${version%%$'\n'*}, plugin $plugin" >&2
