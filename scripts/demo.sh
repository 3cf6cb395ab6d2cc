#!/usr/bin/env bash
# The README's main job: set up, then run the whole pipeline on a simulated month.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/dagster_home}"
exec .venv/bin/usage-etl demo "$@"
