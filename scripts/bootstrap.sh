#!/usr/bin/env bash
# Creates (or reuses) the virtual environment in $MLCHECK_VENV (default .venv) and installs
# mlcheck with the extras named in $1 (e.g. "example" or "test"). Sourced by scripts/demo and
# scripts/test, so both set up the same way.
#
# torch: pip would take a CUDA build (several GB) by default. Where the CPU build is enough,
# point pip at it, e.g.
#   MLCHECK_TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" ./scripts/test
# (on mlcheck's own development machines `pip install torch==2.13.0` already finds a CPU build).
set -euo pipefail
extras=${1:-}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MLCHECK_VENV:-$root/.venv}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating $venv" >&2
  "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
# Nothing changed since the last install (same pyproject.toml, extras, scripts, Python and
# checkout; every requirement still there): skip pip, which would resolve everything again.
stamp="$venv/.mlcheck-installed${extras:+-$extras}"
if python -I "$root/scripts/install_stamp.py" check "$root" "$extras" "$stamp"; then
  echo "==> mlcheck${extras:+[$extras]} is installed and current (to reinstall: rm $stamp)" >&2
else
  rm -f "$stamp"
  pip_quiet=(--quiet --disable-pip-version-check)
  if ! python -c 'import torch' 2>/dev/null; then
    echo "==> installing torch ${MLCHECK_TORCH_VERSION:-2.13.0}" >&2
    # shellcheck disable=SC2086
    pip install "${pip_quiet[@]}" "torch==${MLCHECK_TORCH_VERSION:-2.13.0}" ${MLCHECK_TORCH_PIP_ARGS:-} \
      2> >(grep -v '^WARNING: Location' >&2)
  fi
  echo "==> installing mlcheck${extras:+[$extras]} (editable)" >&2
  # (pip's warnings about this machine's unused local package folders are noise: filtered)
  pip install "${pip_quiet[@]}" -e "$root${extras:+[$extras]}" 2> >(grep -v '^WARNING: Location' >&2)
  python -c 'import mlcheck, torch' || { echo "install failed" >&2; exit 2; }
  python -I "$root/scripts/install_stamp.py" write "$root" "$extras" "$stamp"
fi
