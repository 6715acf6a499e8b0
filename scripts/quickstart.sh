#!/usr/bin/env bash
# From a fresh machine to a running local stack and a readable end-to-end run:
# setup, `tokenmeter stack start` (migrations + seed on a new database), then `tokenmeter demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/tokenmeter stack start
.venv/bin/tokenmeter demo
