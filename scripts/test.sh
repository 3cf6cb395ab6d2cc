#!/usr/bin/env bash
# Run the whole test suite on real components (SeaweedFS, chDB, PostgreSQL). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check usage_etl tests bench
set +e
.venv/bin/pytest "$@"
status=$?
set -e
# pytest exits 5 when no test was collected: that is a failure for CI, say so plainly.
if [ "$status" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$status"
