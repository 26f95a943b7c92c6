#!/usr/bin/env bash
# medenc's two entry points on a fresh machine:
#   ./run.sh demo [ARGS...]   set up .venv (if needed) and run the end-to-end demo on the synthetic data set
#   ./run.sh test [PYTEST...] set up .venv (if needed) with dev extras and run the test suite
#   ./run.sh setup            only set up .venv
# Environment:
#   MEDENC_TORCH_SPEC  torch requirement installed first (default: torch==2.13.0, the local CPU build);
#                      CUDA users set e.g. MEDENC_TORCH_SPEC="torch==2.13.0 --index-url <their wheel index>"
#   MEDENC_VENV        virtual environment folder (default: .venv beside this script)
#   PYTHON             interpreter used to create it (default: python3)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
venv="${MEDENC_VENV:-$here/.venv}"
py="${PYTHON:-python3}"
torch_spec="${MEDENC_TORCH_SPEC:-torch==2.13.0}"

setup() {
  local extras="$1"
  local stamp="$venv/.medenc-setup-$extras"
  local want
  want="$(sha256sum pyproject.toml | cut -c1-16) $torch_spec"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
  echo "medenc: setting up $venv (torch: $torch_spec, extras: $extras)" >&2
  # torch first, pinned: an unpinned torch pulled in by monai/torchattacks would be a multi-GB CUDA build.
  # shellcheck disable=SC2086
  "${pip[@]}" install $torch_spec numpy 2>&1 | grep -v "is ignored" >&2 || true
  "$venv/bin/python" -c "import torch" || { echo "medenc: torch install failed ($torch_spec)" >&2; exit 1; }
  if [ "$extras" = "dev" ]; then
    "${pip[@]}" install -e ".[dev]" 2>&1 | grep -v "is ignored" >&2 || true
    # benchmark comparison; its own deps (torchvision, scipy, ...) are not wanted beside the pinned torch
    "${pip[@]}" install --no-deps "torchattacks==3.5.1" 2>&1 | grep -v "is ignored" >&2 || true
  else
    "${pip[@]}" install -e . 2>&1 | grep -v "is ignored" >&2 || true
  fi
  "$venv/bin/python" -c "import medenc, monai, pydicom" || { echo "medenc: package install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  setup)
    setup "${1:-dev}"
    ;;
  demo)
    setup base
    exec "$venv/bin/medenc" demo "$@"
    ;;
  test)
    setup dev
    # the real parts some tests use (Debian chromium, dicom3tools, ...): each scripts/install-*.sh is idempotent
    for part in scripts/install-*.sh; do
      [ -x "$part" ] || continue
      "$part" || echo "medenc: $part failed; the tests that need it will skip" >&2
    done
    "$venv/bin/ruff" check .
    exec "$venv/bin/python" -m pytest "$@"
    ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
