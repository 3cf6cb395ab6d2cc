#!/usr/bin/env bash
# The Dagster UI on the demo's data: the demo's settings (dagster_home/demo.env, written by
# `usage-etl demo`), its SeaweedFS (reused when the demo left it running, else started here and
# stopped on exit), then the webserver and the daemon (what `dagster dev` runs, but the daemon is
# `python -m usage_etl.daemon`: backfills start within USAGE_ETL_DAEMON_INTERVAL_SECONDS, 2 s,
# instead of `dagster dev`'s dagster-daemon and its fixed 30 s loop). Schedules and the sensor start STOPPED here
# (USAGE_ETL_AUTOMATION=stopped): browsing the demo must not start daily runs for today's dates.
# Ctrl+C stops what this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/dagster_home}"
if [ -f "$DAGSTER_HOME/demo.env" ]; then
  # shellcheck disable=SC1091
  source "$DAGSTER_HOME/demo.env"
fi
export USAGE_ETL_PRICE_BOOK="${USAGE_ETL_PRICE_BOOK:-$PWD/config/price_book.demo.yaml}"
export USAGE_ETL_AUTOMATION="${USAGE_ETL_AUTOMATION:-stopped}"
PORT_FROM_ENV="${AWS_ENDPOINT_URL_S3:-}"
WEED_PID=""
eval "$(S3_URL="$PORT_FROM_ENV" .venv/bin/python - <<'PY'
import os
from urllib.parse import urlsplit
from usage_etl.demo import DEMO_S3_PORT, ensure_demo_s3
port = urlsplit(os.environ["S3_URL"]).port if os.environ.get("S3_URL") else DEMO_S3_PORT
server, started = ensure_demo_s3(port or DEMO_S3_PORT)
for key, value in server.env().items():
    print(f"export {key}={value}")
print(f"WEED_PID={server.process.pid if started else ''}")
PY
)"
.venv/bin/python -m usage_etl.daemon run -w workspace.yaml &
DAEMON=$!
.venv/bin/dagster-webserver -w workspace.yaml -h 127.0.0.1 -p "${DAGSTER_PORT:-3000}" &
WEB=$!
trap 'kill "$DAEMON" "$WEB" 2>/dev/null || true; [ -n "$WEED_PID" ] && kill "$WEED_PID" 2>/dev/null || true; wait' EXIT INT TERM
wait -n "$DAEMON" "$WEB"
