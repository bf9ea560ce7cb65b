#!/usr/bin/env bash
# Make Postgres and Redis reachable on their standard ports, starting them (or installing them
# from the OS packages) where they are not running, and create the hotline database.
set -euo pipefail

PGHOST=127.0.0.1
PGPORT=5432
DBNAME="${HOTLINE_DB_NAME:-hotline}"

need_root() { [ "$(id -u)" = 0 ] || { echo "services: $1 needs root (or start it yourself)" >&2; exit 1; }; }

if ! pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    need_root "installing postgresql"
    echo "services: installing PostgreSQL from the OS packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "services: starting PostgreSQL $version" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h "$PGHOST" -p "$PGPORT" && break; sleep 1; done
  pg_isready -h "$PGHOST" -p "$PGPORT" >/dev/null || { echo "services: PostgreSQL did not start" >&2; exit 1; }
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if ! command -v redis-server >/dev/null 2>&1; then
    need_root "installing redis-server"
    echo "services: installing Redis from the OS packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  echo "services: starting Redis" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "services: Redis did not start" >&2; exit 1; }
fi

if ! psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DBNAME'" | grep -q 1; then
  echo "services: creating database $DBNAME" >&2
  psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -qc "CREATE DATABASE \"$DBNAME\""
fi
