#!/usr/bin/env bash
# The whole test suite from a fresh machine: setup, lint (ruff), then pytest (which starts its own local stack
# on ports 54331/54332 and also runs the pgTAP files in supabase/tests through pg_prove).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet app tests bench scripts
exec .venv/bin/pytest "$@"
