#!/usr/bin/env bash
# Set up, then run the demo: the service against the built-in PBX simulator with real Postgres
# and Redis. Arguments go to `hotline demo` (e.g. --calls 20, --speed 40, --seed 7).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/hotline demo "$@"
