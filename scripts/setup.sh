#!/usr/bin/env bash
# Install everything a fresh machine lacks, idempotently: PostgreSQL 15+ server binaries, pgTAP
# and plpgsql_check (apt-get, when root and missing), a Python venv in .venv with tokenmeter and
# its dev tools, and the real Supabase CLI (pinned, from npm, into the git-ignored .tools/; node
# and npm from apt-get when missing) for tests/test_supabase_cli.py.
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

# PgBouncer, for tests/test_openai_endpoint.py: the openai function's database through a
# transaction-mode pooler, as Supabase has edge functions connect.
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing PgBouncer (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
  else
    echo "PgBouncer is needed by the tests: sudo apt-get install pgbouncer" >&2
  fi
fi

# plpgsql_check, for `supabase db lint` (tests/test_supabase_cli.py), for the newest server
# installed (the one the local stack picks).
pg_newest=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sed 's|/usr/lib/postgresql/||; s|/.*||' \
  | sort -n | tail -1)
if [ -n "$pg_newest" ] && [ ! -f "/usr/share/postgresql/$pg_newest/extension/plpgsql_check.control" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing plpgsql_check (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "postgresql-$pg_newest-plpgsql-check" >/dev/null
  else
    # Only the tests need it: the stack runs without it, so this is not fatal here.
    echo "warning: plpgsql_check is missing; the test suite's supabase db lint check fails" \
      "without it. Install it, e.g.: sudo apt-get install postgresql-$pg_newest-plpgsql-check" >&2
  fi
fi

# Chromium from the Debian packages, for the dashboard's browser tests
# (tests/test_dashboard_browser.py drive it through Playwright's executable_path; Playwright's
# own browser download is never used).
have_chromium() {
  [ -x /usr/lib/chromium/chromium ] || command -v chromium >/dev/null 2>&1
}
if ! have_chromium; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
  else
    # Only the browser tests need it: a warning, not a stop.
    echo "warning: chromium is missing; tests/test_dashboard_browser.py fails without it." \
      "Install it, e.g.: sudo apt-get install chromium" >&2
  fi
fi

# The real Supabase CLI, pinned. Its npm package brings the binary for this platform as an
# optional dependency (@supabase/cli-linux-x64): nothing is downloaded at install time besides
# the npm packages themselves. Newer releases are not known to install here; see
# docs/compatibility.md before changing the version.
SUPABASE_CLI_VERSION=2.117.0
supabase_cli="$PWD/.tools/node_modules/.bin/supabase"
have_supabase_cli() {
  # From / and without telemetry: the CLI then writes no state (supabase/.temp, ~/.supabase).
  [ "$(cd / && SUPABASE_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1 "$supabase_cli" --version 2>/dev/null)" \
    = "$SUPABASE_CLI_VERSION" ]
}
if ! have_supabase_cli; then
  if ! command -v npm >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1
  then
    echo "==> installing node and npm (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nodejs npm >/dev/null
  fi
  if command -v npm >/dev/null 2>&1; then
    echo "==> installing the Supabase CLI $SUPABASE_CLI_VERSION into .tools (npm)"
    mkdir -p .tools
    [ -f .tools/package.json ] || echo '{"private": true}' > .tools/package.json
    npm install --prefix .tools --save-exact --include=optional --no-audit --no-fund \
      --loglevel=error "supabase@$SUPABASE_CLI_VERSION" >/dev/null || true
  fi
  # Only tests/test_supabase_cli.py needs the CLI (the stack does not): a warning, not a stop;
  # that test module fails and names this script when the CLI is missing.
  if ! have_supabase_cli; then
    echo "warning: the Supabase CLI $SUPABASE_CLI_VERSION is not installed ($supabase_cli)." \
      "It needs node and npm (e.g. sudo apt-get install nodejs npm) and an npm package with" \
      "the binary for this platform (@supabase/cli-<os>-<arch>)." >&2
  fi
fi

# The stack's ports (54320-54339: the Supabase CLI's 54321-54324 and the test run's 54331-54338)
# lie inside Linux's ephemeral range (32768-60999): any outgoing connection may be given one as
# its local port, and a stack then fails to listen there ("could not start server"; seen on a
# busy machine). Reserving them keeps the kernel from handing them out; explicit binds still
# work. Needs root; a developer can run the same line with sudo.
reserved=/proc/sys/net/ipv4/ip_local_reserved_ports
if [ "$(id -u)" = "0" ] && [ -w "$reserved" ] && ! grep -q "54320-54339" "$reserved"; then
  current="$(cat "$reserved")"
  echo "${current:+$current,}54320-54339" > "$reserved" 2>/dev/null \
    || echo "warning: could not reserve ports 54320-54339 ($reserved)" >&2
fi
