#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run it.
#   bash scripts/test.sh [pytest args...]
# Installs: a virtualenv in .venv with the package and its [testing] extras;
# Debian's chromium (for the browser tests), redis-server, postgresql, nodejs, curl and nginx (the
# tests start their own nginx in front of the production profile) if absent.
# Starts Redis and PostgreSQL if they do not answer. Never downloads a browser build.
# With CI=true (or SESSUP_PY313=1; SESSUP_PY313=0 turns it off) it then also runs the suite's fast part
# (not browser, not slow) on Python 3.13 in .venv313: python3.13 from SESSUP_PYTHON313, PATH or pyenv.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*"; }
# pip's machine-wide config may name local mirrors that are absent; drop that noise only.
pip_quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# --- system packages -----------------------------------------------------------------
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v redis-server >/dev/null || need+=(redis-server)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v npm >/dev/null || need+=(nodejs npm)
{ [ -x /usr/sbin/clamd ] && ldconfig -p | grep -q 'libmagic\.so\.1'; } || need+=(clamav-daemon libmagic1)
command -v msgfmt >/dev/null || need+=(gettext)  # the catalogs' .mo files are checked against their .po
command -v curl >/dev/null || need+=(curl)  # the README's and the guides' curl blocks are run
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  # Packages must not start their system services (nginx on port 80): the tests start their own.
  no_start=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    no_start=1
  fi
  apt_install "${need[@]}"
  if [ -n "$no_start" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi

# --- services --------------------------------------------------------------------------
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 60); do answers "$1" && return 0; sleep 0.5; done; return 1; }

if ! answers 6379; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 || { echo "Redis did not start" >&2; exit 1; }
fi
if ! answers 5432; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  wait_port 5432 || { echo "PostgreSQL did not start" >&2; exit 1; }
fi
# The tests use database "test" with trust auth for user postgres.
if command -v psql >/dev/null; then
  psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='test'" 2>/dev/null | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -c "create database test" >/dev/null 2>&1 || true
fi

# --- Python ----------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then log "creating .venv"; python3 -m venv .venv; fi
log "installing pyramid_sessup[testing]"
pip_quiet .venv/bin/python -m pip install -q -e '.[testing]'

# --- JavaScript test clients (tus-js-client; Uppy bundled for the browser test) ------
for dir in tests/tus/js tests/browser/uppy; do
  log "npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --silent)
done

# --- tests -----------------------------------------------------------------------------
in_ci=""
case "${CI:-}" in 1|true|TRUE|True|yes) in_ci=1 ;; esac
py313="${SESSUP_PY313:-$in_ci}"
[ "$py313" = 0 ] && py313=""

# Lint and types first: quick, and a failure names the line (pyproject.toml holds the rules).
log "ruff and mypy"
.venv/bin/ruff check pyramid_sessup tests bench scripts
.venv/bin/mypy

log "running the tests"
if [ -z "$py313" ]; then exec .venv/bin/python -m pytest "$@"; fi
status=0
.venv/bin/python -m pytest "$@" || status=$?

# --- the fast part again on Python 3.13 ------------------------------------------------
find_python313() {
  local candidate
  for candidate in "${SESSUP_PYTHON313:-}" "$(command -v python3.13 || true)" \
                   "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    # A pyenv shim exists even when its version is not installed: ask the interpreter itself.
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}
if python313="$(find_python313)"; then
  if [ ! -x .venv313/bin/python ]; then log "creating .venv313 with $python313"; "$python313" -m venv .venv313; fi
  log "installing pyramid_sessup[testing] on Python 3.13"
  pip_quiet .venv313/bin/python -m pip install -q -e '.[testing]'
  log "running the fast tests on Python 3.13"
  .venv313/bin/python -m pytest -m "not browser and not slow" "$@" || status=$?
elif [ -n "$in_ci" ]; then
  echo "Python 3.13 not found (set SESSUP_PYTHON313, or put python3.13 on PATH)" >&2; status=1
else
  log "skipping the Python 3.13 run: no python3.13 found"
fi
exit "$status"
