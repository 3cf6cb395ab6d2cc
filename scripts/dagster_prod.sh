#!/usr/bin/env bash
# Run the Dagster daemon and webserver on the PostgreSQL-backed production instance.
#
#   DAGSTER_PG_HOST=db DAGSTER_PG_PORT=5432 DAGSTER_PG_USER=dagster \
#   DAGSTER_PG_PASSWORD=... DAGSTER_PG_DB=dagster scripts/dagster_prod.sh [--port 3000]
#
# DAGSTER_HOME (default: dagster_home/postgres/, git-ignored) receives
# dagster_home/dagster.postgres.yaml as its dagster.yaml. USAGE_ETL_WAREHOUSE_POOL_LIMIT
# (default 1) is how many runs may use the warehouse at once: keep 1 for embedded chDB.
# The pipeline's own settings (USAGE_ETL_*, AWS_*) are read from the environment as usual.
# The daemon is `python -m usage_etl.daemon` (dagster-daemon with the backfill loop every
# USAGE_ETL_DAEMON_INTERVAL_SECONDS, default 2 s, instead of Dagster's fixed 30 s).
# Stops both processes on Ctrl-C or when either exits.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=3000
HOST=127.0.0.1
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --host) HOST="$2"; shift 2 ;;
    *) echo "usage: $0 [--port N] [--host ADDR]" >&2; exit 2 ;;
  esac
done

for var in DAGSTER_PG_HOST DAGSTER_PG_PORT DAGSTER_PG_USER DAGSTER_PG_PASSWORD DAGSTER_PG_DB; do
  if [ -z "${!var:-}" ]; then echo "dagster_prod: $var is not set" >&2; exit 2; fi
done

export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/dagster_home/postgres}"
# Production: schedules and the late-file sensor start RUNNING (docs/operations.md).
export USAGE_ETL_AUTOMATION="${USAGE_ETL_AUTOMATION:-running}"
mkdir -p "$DAGSTER_HOME"
cp dagster_home/dagster.postgres.yaml "$DAGSTER_HOME/dagster.yaml"
echo "dagster_prod: instance $DAGSTER_HOME (PostgreSQL $DAGSTER_PG_HOST:$DAGSTER_PG_PORT/$DAGSTER_PG_DB)"

.venv/bin/dagster instance migrate >/dev/null
# The warehouse pool's limit is stored in the instance before anything is queued (a limit that
# only comes from dagster.yaml's default_limit is created by the queue daemon too late to hold
# the very first queued runs). 1 for embedded chDB; more with a ClickHouse server DSN.
.venv/bin/dagster instance concurrency set warehouse "${USAGE_ETL_WAREHOUSE_POOL_LIMIT:-1}" >/dev/null
.venv/bin/python -m usage_etl.daemon run -m usage_etl.definitions &
DAEMON=$!
.venv/bin/dagster-webserver -m usage_etl.definitions -h "$HOST" -p "$PORT" &
WEB=$!
trap 'kill "$DAEMON" "$WEB" 2>/dev/null || true; wait' EXIT INT TERM
wait -n "$DAEMON" "$WEB"
