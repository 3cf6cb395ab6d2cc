#!/usr/bin/env bash
# Idempotent setup for the main job: PostgreSQL binaries if missing (the production instance and
# the tests use them), uv, and the locked .venv. Chromium is not needed here: only the browser
# test uses it, and scripts/test.sh installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "setup: installing PostgreSQL (Debian package)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv"
  python3 -m pip install -q --disable-pip-version-check uv 2>/dev/null \
    || python3 -m pip install -q --user --disable-pip-version-check uv
  export PATH="$HOME/.local/bin:$PATH"
fi

# --compile-bytecode: every process (each run, code server, CLI) reads .pyc instead of compiling
# ~2,800 modules of dagster and its dependencies (~1.5-2 CPU-s per process start otherwise, since
# a shell or container with PYTHONDONTWRITEBYTECODE=1 never writes them).
uv sync --frozen --python 3.11 --compile-bytecode -q
# ... and the project itself, which uv installs editable and does not compile (~0.3 CPU-s per
# process start otherwise; .pyc files are invalidated by the source's mtime, so an edit is seen).
.venv/bin/python -m compileall -q usage_etl >/dev/null
echo "setup: .venv ready ($(.venv/bin/python --version))"

# Set the Dagster instance up once, before anything can start a run: two first runs at once on a
# new SQLite instance would both create its tables (docs/operations.md, "A fresh instance").
DAGSTER_HOME="${DAGSTER_HOME:-$PWD/dagster_home}" .venv/bin/python -c \
  "from usage_etl.instance import prepare_instance; prepare_instance()"
