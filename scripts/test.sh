#!/usr/bin/env bash
# Run the whole test suite from a fresh clone: sets up .venv and the browser the page tests
# drive (Debian's chromium), then runs pytest. Slow end-to-end tests are included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "scripts/test.sh: the page tests need Debian's chromium (sudo apt-get install chromium)" >&2
    fi
fi
# The store's PostgreSQL tests start a throw-away cluster of their own (tests/postgres.py) with
# Debian's PostgreSQL 15 server binaries.
if ! { command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; } \
        && [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
    else
        echo "scripts/test.sh: the store tests need PostgreSQL 15 (sudo apt-get install postgresql-15)" >&2
    fi
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=20 "$@"
