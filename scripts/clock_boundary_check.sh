#!/usr/bin/env bash
# Run tests with a fake wall clock near a calendar boundary, to catch tests (and code) that
# depend on the time of day they run at. libfaketime (LD_PRELOAD) shifts the clock of pytest and
# of everything it starts — PostgreSQL (as the `postgres` OS user, the environment passes
# through), the gateway, the workers, pg_prove — by one fixed offset, so every process agrees on
# "now" and time still ticks. The suite's stack is created fresh at the fake time (conftest), so
# migrations and `stack start` make the usage partitions of the fake month, as in a real run.
#
#   bash scripts/clock_boundary_check.sh BOUNDARY LEAD [pytest args...]
#
# BOUNDARY: a UTC instant, "YYYY-MM-DD HH:MM:SS" (e.g. "2026-12-01 00:00:00", a month's end);
# LEAD: seconds before BOUNDARY at which the run starts (the stack takes ~10-20 s to start).
# Use your own ports/state dir (TOKENMETER_API_PORT, TOKENMETER_DB_PORT, TOKENMETER_STATE_DIR).
# Example: the pgTAP files from 40 s before a month's end:
#   bash scripts/clock_boundary_check.sh "2026-12-01 00:00:00" 40 tests/test_pgtap.py -q
# Needs Debian's faketime package (`apt-get install faketime`) and a C compiler (a 20-line shim,
# scripts/clock_boundary/sem_clockwait.c); not part of CI (see README). Known: PostgreSQL's
# statement_timeout does not fire under the fake clock (test_sql_editor_statement_timeout_rolls_back).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ $# -lt 2 ]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
boundary=$1
lead=$2
shift 2

lib=$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -1 || true)
if [ -z "$lib" ]; then
  echo "libfaketime is missing: apt-get install faketime" >&2
  exit 2
fi
target=$(date -u -d "$boundary UTC" +%s)
offset=$((target - lead - $(date -u +%s)))
echo "==> fake clock: $(date -u -d "@$((target - lead))" '+%F %T') UTC at start" \
  "(offset ${offset} s), boundary $(date -u -d "@$target" '+%F %T') UTC" >&2

# CLOCK_MONOTONIC is shifted too (libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 makes
# Python's time.sleep fail with EINVAL); the shim gives timed lock waits (sem_clockwait), which
# libfaketime leaves alone, the same clock — without it threading.Event.wait(10) in the stack's
# workers lasts as long as the offset.
cc=$(command -v cc || command -v gcc || true)
if [ -z "$cc" ]; then
  echo "a C compiler is needed for the sem_clockwait shim: apt-get install gcc" >&2
  exit 2
fi
shim_dir="${TMPDIR:-/tmp}/tokenmeter-faketime-$(id -u)"
shim="$shim_dir/sem_clockwait.so"
src=scripts/clock_boundary/sem_clockwait.c
if [ ! -f "$shim" ] || [ "$src" -nt "$shim" ]; then
  mkdir -p "$shim_dir"
  "$cc" -O2 -shared -fPIC -o "$shim" "$src"
fi

# An offset (not FAKETIME="@start"), so that every process started later agrees with the ones
# already running.
export LD_PRELOAD="$shim:$lib${LD_PRELOAD:+:$LD_PRELOAD}"
export FAKETIME="${offset}"
[ "$offset" -ge 0 ] && FAKETIME="+${offset}"
status=0
.venv/bin/python -m pytest -p no:cacheprovider "$@" || status=$?
echo "==> fake clock at the end: $(date -u '+%F %T') UTC" >&2
exit "$status"
