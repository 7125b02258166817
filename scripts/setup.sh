#!/usr/bin/env bash
# facedata set-up: system packages (when missing), .venv, torch==2.13.0 first, then the project. Idempotent.
#
# Why torch first: the local CPU wheel of torch 2.13.0 is what `pip install torch==2.13.0` picks here; letting
# another package pull torch through a range would fetch a multi-GB CUDA build (see ../shared/DESIGN.md).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  git                                          # DVC and lineage need a git repository
  chromium chromium-driver                     # selenium crawling (headless)
  libegl1 libegl-mesa0 libgl1-mesa-dri libgl1  # offscreen rendering (pyrender over EGL, Mesa llvmpipe)
  libglib2.0-0                                 # OpenCV / mediapipe runtime
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing system packages: ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: system packages present"
fi

PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
if [[ -z "$PY" ]]; then echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; fi

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
  echo "setup: installing torch==2.13.0 (CPU build) first"
  "${PIP[@]}" install torch==2.13.0
fi
echo "setup: installing facedata and its pinned dependencies"
"${PIP[@]}" install -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
.venv/bin/python -m pip check
.venv/bin/python -c 'import facedata, torch; print(f"setup: facedata {facedata.__version__}, torch {torch.__version__}")'
.venv/bin/dvc config core.analytics false
if [[ ! -d ../shared/data ]]; then
  echo "setup: note: ../shared (demo data and model weights) is not beside this checkout;"
  echo "       the demo build and the tests that need real data will skip or fail with a message."
fi
echo "setup: done. Next: make run   (or .venv/bin/facedata build)"
