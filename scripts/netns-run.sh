#!/usr/bin/env bash
# Run COMMAND inside a private network namespace that has only its own loopback (brought up here).
#
#   scripts/netns-run.sh COMMAND [ARGS...]
#
# Nothing outside can reach a server COMMAND starts (Orthanc, a local Ray cluster), and COMMAND reaches
# nothing outside (Ray's probe of an outside address to find its own IP fails at once and it falls back
# to 127.0.0.1). As root `unshare -n` is used, else `unshare -rn` where unprivileged user namespaces are
# allowed. The exit status is COMMAND's; 3 when no namespace can be made.
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi
if [ "${MEDENC_NETNS_CHILD:-}" != 1 ]; then
  if unshare -n true 2>/dev/null; then
    flags=(-n)
  elif unshare -rn true 2>/dev/null; then
    flags=(-r -n)
  else
    echo "netns-run: cannot create a network namespace (unshare -n and unshare -rn fail)" >&2
    exit 3
  fi
  MEDENC_NETNS_CHILD=1 exec unshare "${flags[@]}" -- "$0" "$@"
fi
unset MEDENC_NETNS_CHILD
ip link set lo up
if ip -o link show | grep -v ': lo:' | grep -q .; then
  echo "netns-run: the namespace has interfaces besides lo; refusing to run" >&2
  exit 3
fi
exec "$@"
