#!/usr/bin/env bash
# Run COMMAND beside a throw-away Orthanc PACS (DICOMweb plugin on) inside a private network namespace.
#
#   scripts/orthanc-netns.sh COMMAND [ARGS...]
#
# The namespace has only its own loopback (brought up here): Orthanc, which listens on all interfaces,
# can be reached by nothing outside it, and COMMAND (run inside it too) reaches nothing outside. Orthanc
# runs from its own configuration in a temporary folder (storage there, HTTP on 127.0.0.1:8042, the DICOM
# port off, HTTP basic authentication with a random password) and is stopped by its own PID when COMMAND
# ends or fails (and gets SIGKILL if this script is killed: setpriv --pdeathsig); the folder is removed.
# The exit status is COMMAND's (3: no network namespace could be made, 4: Orthanc did not start).
# The namespace is made by scripts/netns-run.sh.
#
# COMMAND sees:
#   MEDENC_TEST_DICOMWEB_URL    http://127.0.0.1:8042/dicom-web  (the DICOMweb root)
#   MEDENC_TEST_ORTHANC_URL     http://127.0.0.1:8042            (Orthanc's own REST API)
#   MEDENC_DICOMWEB_USER / MEDENC_DICOMWEB_PASSWORD   the credentials (medenc reads them from the environment)
#   MEDENC_TEST_ORTHANC_PID     Orthanc's PID
# MEDENC_ORTHANC_PIDFILE (optional): a file this script writes Orthanc's PID into (for a caller's check
# that it is gone afterwards).
# Needs util-linux unshare/setpriv, iproute2 ip, Debian orthanc + orthanc-dicomweb (scripts/install-orthanc.sh).
set -euo pipefail

orthanc=/usr/sbin/Orthanc
plugin=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
port=8042

if [ $# -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi
if [ ! -x "$orthanc" ] || [ ! -f "$plugin" ]; then
  echo "orthanc-netns: Orthanc or its DICOMweb plugin is missing (scripts/install-orthanc.sh)" >&2
  exit 4
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "${MEDENC_ORTHANC_INSIDE:-}" != 1 ]; then
  # not yet inside: re-run this script in a private network namespace (scripts/netns-run.sh brings lo up)
  MEDENC_ORTHANC_INSIDE=1 exec "$here/netns-run.sh" "$0" "$@"
fi
unset MEDENC_ORTHANC_INSIDE

work="$(mktemp -d "${TMPDIR:-/tmp}/medenc-orthanc.XXXXXX")"
password="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
mkdir -p "$work/storage"
cat > "$work/orthanc.json" <<JSON
{
  "Name": "medenc-test",
  "StorageDirectory": "$work/storage",
  "IndexDirectory": "$work/storage",
  "StorageCompression": false,
  "HttpServerEnabled": true,
  "HttpPort": $port,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": true,
  "RegisteredUsers": { "medenc": "$password" },
  "DicomServerEnabled": false,
  "DicomPort": 4242,
  "SaveJobs": false,
  "OverwriteInstances": false,
  "LimitFindResults": 0,
  "LimitFindInstances": 0,
  "Plugins": [ "$plugin" ],
  "DicomWeb": {
    "Enable": true,
    "Root": "/dicom-web/",
    "EnableWado": false,
    "Ssl": false,
    "StudiesMetadata": "Full",
    "SeriesMetadata": "Full"
  }
}
JSON

pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

setpriv --pdeathsig KILL "$orthanc" "$work/orthanc.json" > "$work/orthanc.log" 2>&1 &
pid=$!
if [ -n "${MEDENC_ORTHANC_PIDFILE:-}" ]; then
  echo "$pid" > "$MEDENC_ORTHANC_PIDFILE"
fi
ready=0
for _ in $(seq 150); do
  if ! kill -0 "$pid" 2>/dev/null; then
    break
  fi
  if curl -s -o /dev/null -u "medenc:$password" "http://127.0.0.1:$port/dicom-web/studies"; then
    ready=1
    break
  fi
  sleep 0.1
done
if [ "$ready" != 1 ]; then
  echo "orthanc-netns: Orthanc did not start; its log:" >&2
  tail -n 20 "$work/orthanc.log" >&2 || true
  exit 4
fi

export MEDENC_TEST_DICOMWEB_URL="http://127.0.0.1:$port/dicom-web"
export MEDENC_TEST_ORTHANC_URL="http://127.0.0.1:$port"
export MEDENC_DICOMWEB_USER=medenc
export MEDENC_DICOMWEB_PASSWORD="$password"
export MEDENC_TEST_ORTHANC_PID="$pid"
set +e
"$@"
status=$?
set -e
exit "$status"
