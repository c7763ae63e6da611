#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run it.
#   bash scripts/test.sh [pytest args...]
# Installs: a virtualenv in .venv with the package and its [testing] extras;
# Debian's chromium (for the browser tests), redis-server, postgresql, nodejs/npm and curl if absent.
# Starts Redis and PostgreSQL if they do not answer. Never downloads a browser build.
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
command -v curl >/dev/null || need+=(curl)  # the README's and the guides' curl blocks are run
if [ ${#need[@]} -gt 0 ]; then log "apt-get install ${need[*]}"; apt_install "${need[@]}"; fi

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

# --- JavaScript test clients (tus-js-client) -------------------------------------------
log "npm ci in tests/tus/js"
(cd tests/tus/js && npm ci --no-audit --no-fund --silent)

# --- tests -----------------------------------------------------------------------------
log "running the tests"
exec .venv/bin/python -m pytest "$@"
