#!/usr/bin/env bash
# Set up everything on a fresh machine: venv in .venv, the package and its test tools,
# Postgres and Redis reachable, migrations applied.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.hotline-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
./scripts/services.sh
.venv/bin/hotline migrate >&2
