#!/usr/bin/env bash
# Sets up meddiff on a fresh machine: a Python 3.11 virtual environment in .venv with the package (editable) and its
# test tools. Idempotent: re-running is instant unless pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$candidate"; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "setup: meddiff needs Python 3.11 (torch 2.14.1 wheels); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi

stamp=.venv/.meddiff-installed
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setup: installing meddiff and its dependencies into .venv (a local CPU wheel of torch: ~2 GB, ~90 s; the" \
       "registry's CUDA build of torch: ~7 GB, 2-4 min)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch, ray, diffusers; print(f"torch {torch.__version__}, ray {ray.__version__}, diffusers {diffusers.__version__}")'))"
