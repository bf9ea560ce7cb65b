#!/usr/bin/env bash
# Set up everything on a fresh machine: venv in .venv, the package and its test tools,
# espeak-ng and sox for prompt audio, Postgres and Redis reachable, migrations applied.
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
# `hotline prompts build` (ivr/prompts.py) speaks missing prompts with espeak-ng and converts them
# with sox: install them from the OS packages where the commands are missing.
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v sox >/dev/null 2>&1 || missing+=(sox)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup: installing ${missing[*]} needs root (or install them yourself)" >&2; exit 1; }
  echo "setup: installing ${missing[*]} from the OS packages" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
./scripts/services.sh
.venv/bin/hotline migrate >&2
