#!/usr/bin/env bash
# From a fresh machine to a running local stack and a readable end-to-end run:
# setup, `tokenmeter stack start` (migrations + seed on a new database), then `tokenmeter demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/tokenmeter stack start
.venv/bin/tokenmeter demo
# The pricing consolidation check (exit 0 = no errors): the same report a team with a legacy
# database runs before `db push` drops the legacy price columns (docs/pricing.md).
.venv/bin/python scripts/verify_pricing_migration.py
