#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 and that the test database exists.
# Starts the machine's cluster when it is installed but stopped; never changes its configuration.
set -euo pipefail
DB=${CONSOLE_TEST_PG_DB:-console_test}
ready() { pg_isready -q -h 127.0.0.1 -p 5432; }
if ! ready; then
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  if [ -n "$ver" ]; then
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  fi
  for _ in $(seq 1 50); do ready && break; sleep 0.2; done
fi
ready || { echo "PostgreSQL is not answering on 127.0.0.1:5432; the PostgreSQL tests will be skipped." >&2; exit 0; }
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else eval "$*"; fi; }
if ! as_pg "psql -h 127.0.0.1 -U postgres -tAc \"SELECT 1 FROM pg_database WHERE datname='$DB'\"" | grep -q 1; then
  as_pg "psql -h 127.0.0.1 -U postgres -c 'CREATE DATABASE $DB'" >/dev/null
fi
echo "PostgreSQL test database $DB is ready."
