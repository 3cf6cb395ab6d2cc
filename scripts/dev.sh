#!/usr/bin/env bash
# The Dagster UI on the demo's data: SeaweedFS on the demo's port, then `dagster dev`.
# Ctrl+C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/dagster_home}"
export USAGE_ETL_PRICE_BOOK="${USAGE_ETL_PRICE_BOOK:-$PWD/config/price_book.demo.yaml}"
eval "$(.venv/bin/python - <<'PY'
from usage_etl.demo import DEMO_DIR, DEMO_S3_PORT
from usage_etl.services import start_seaweed
server = start_seaweed(DEMO_DIR / "seaweedfs", s3_port=DEMO_S3_PORT)
for key, value in server.env().items():
    print(f"export {key}={value}")
print(f"export WEED_PID={server.process.pid}")
PY
)"
trap 'kill "$WEED_PID" 2>/dev/null || true' EXIT
.venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${DAGSTER_PORT:-3000}"
