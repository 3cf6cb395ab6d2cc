#!/usr/bin/env bash
# Run the whole test suite on real components (SeaweedFS, chDB, PostgreSQL). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# Debian's Chromium for the Playwright browser tests (driven by executable_path: no download).
# Only the tests need it, so it is installed here rather than by setup.sh.
if [ ! -x /usr/bin/chromium ]; then
  echo "test: installing Chromium (Debian package) for the browser tests"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

.venv/bin/ruff check usage_etl tests bench
set +e
# Two workers by default (USAGE_ETL_TEST_WORKERS=0: none): the e2e tests mostly wait on the
# daemon, so the rest of the suite runs beside them. They stay on one worker (xdist_group).
.venv/bin/pytest -n "${USAGE_ETL_TEST_WORKERS:-2}" --dist loadgroup --durations=25 "$@"
status=$?
set -e
# pytest exits 5 when no test was collected: that is a failure for CI, say so plainly.
if [ "$status" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$status"
