#!/usr/bin/env bash
# LocalStack community (localstack-core, pinned) on the host, without Docker,
# in a virtualenv outside the checkout, reused by later runs.
#
#   localstack/localstack.sh install        create the venv (once; idempotent)
#   localstack/localstack.sh start [PORT]   start in the background (default 4566)
#   localstack/localstack.sh stop  [PORT]
#   localstack/localstack.sh env   [PORT]   print the exports that point AWS tools at it
#
# It needs Python 3.13 (pyenv provides one here). Its own certificate code
# breaks on pyOpenSSL 26, so it gets a self-made certificate
# (CUSTOM_SSL_CERT_PATH); the gateway speaks plain HTTP to us anyway.
# Community edition: no RDS, and RunInstances rejects instance profiles.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=localstack/background.sh
source ./background.sh

VERSION=2026.3.0
CACHE="${IHP_INFRA_CACHE:-$HOME/.cache/ihp-infra}"
VENV="$CACHE/localstack-$VERSION"
RUN_DIR="$CACHE/run"
AMIS="$PWD/nixos-amis.json"

python313() {
  local root
  root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
  local found
  found="$(ls -d "$root"/versions/3.13* 2>/dev/null | sort -V | tail -1)"
  if [ -n "$found" ] && [ -x "$found/bin/python3" ]; then
    echo "$found/bin/python3"
  elif command -v python3.13 >/dev/null; then
    command -v python3.13
  else
    echo "LocalStack needs Python 3.13: install it with pyenv (pyenv install 3.13)" >&2
    return 1
  fi
}

install() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import localstack' 2>/dev/null; then
    return 0
  fi
  rm -rf "$VENV"
  "$(python313)" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "localstack-core[runtime]==$VERSION" "cbor2<6" service-identity >&2
}

cert() {
  local pem="$CACHE/localstack-cert.pem"
  if [ ! -s "$pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=localhost.localstack.cloud" \
      -keyout "$CACHE/localstack-key.pem" -out "$CACHE/localstack-crt.pem" 2>/dev/null
    cat "$CACHE/localstack-key.pem" "$CACHE/localstack-crt.pem" >"$pem"
  fi
  echo "$pem"
}

start() {
  local port="${1:-4566}"
  install
  mkdir -p "$RUN_DIR"
  local pidfile="$RUN_DIR/localstack-$port.pid"
  if running "$pidfile"; then
    echo "LocalStack already running on 127.0.0.1:$port (pid $(cat "$pidfile"))" >&2
    return 0
  fi
  local data="$RUN_DIR/localstack-$port"
  rm -rf "$data" && mkdir -p "$data"
  GATEWAY_LISTEN="127.0.0.1:$port" DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 \
    CUSTOM_SSL_CERT_PATH="$(cert)" LOCALSTACK_VOLUME_DIR="$data" FILESYSTEM_ROOT="$data" \
    MOTO_AMIS_PATH="$AMIS" \
    "$VENV/bin/python" -m localstack.runtime.main >"$RUN_DIR/localstack-$port.log" 2>&1 &
  echo $! >"$pidfile"
  wait_ready "$pidfile" "http://127.0.0.1:$port/_localstack/health" "LocalStack $VERSION" \
    "$RUN_DIR/localstack-$port.log"
}

stop() {
  stop_pidfile "$RUN_DIR/localstack-${1:-4566}.pid"
}

env_exports() {
  local port="${1:-4566}"
  cat <<EOT
export AWS_ENDPOINT_URL=http://localhost:$port
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
unset AWS_PROFILE AWS_SESSION_TOKEN
EOT
}

case "${1:-}" in
  install) install ;;
  python) echo "$VENV/bin/python" ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  env) shift; env_exports "$@" ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
