#!/usr/bin/env bash
# Create (once) the project virtualenv .venv with the pinned CPU requirements and reprflow itself.
# Reruns are cheap: pip is skipped when requirements.txt has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -c 'import sys; assert sys.version_info >= (3, 11), "reprflow needs Python >= 3.11"'
  "$PY" -m venv .venv
fi
stamp=.venv/.reprflow-requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
