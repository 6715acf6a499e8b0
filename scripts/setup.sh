#!/usr/bin/env bash
# Install everything a fresh machine lacks, idempotently: PostgreSQL 15+ server binaries and
# pgTAP (apt-get, when root and missing), a Python venv in .venv with tokenmeter and its dev tools.
# Sourced by scripts/quickstart.sh and scripts/test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

have_pg_server() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}
have_pgtap() {
  command -v pg_prove >/dev/null 2>&1 && ls /usr/share/postgresql/*/extension/pgtap.control >/dev/null 2>&1
}

if ! have_pg_server || ! have_pgtap; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing PostgreSQL and pgTAP (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    pg_major=$(apt-cache policy postgresql 2>/dev/null | awk '/Candidate/ {split($2, v, "+"); print v[1]}')
    apt-get install -y -qq postgresql postgresql-contrib "postgresql-${pg_major:-15}-pgtap" \
      libtap-parser-sourcehandler-pgtap-perl >/dev/null
  else
    echo "PostgreSQL 15+ server binaries and pgTAP are required. Install them, e.g.:" >&2
    echo "  sudo apt-get install postgresql postgresql-contrib postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl" >&2
    exit 2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import app, pytest, openai" >/dev/null 2>&1 \
   || [ ! -x .venv/bin/ruff ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "==> installing tokenmeter into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch .venv/.installed
fi
