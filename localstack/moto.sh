#!/usr/bin/env bash
# The local AWS endpoint for tests and the README's demo: a pinned moto
# server in a virtualenv outside the checkout, reused by later runs.
#
#   localstack/moto.sh install        create the venv (once; idempotent)
#   localstack/moto.sh path           print the server to run (moto-server: moto_server
#                                     with moto_as_aws.py's fixes)
#   localstack/moto.sh amis           print the NixOS image fixture (MOTO_AMIS_PATH)
#   localstack/moto.sh start [PORT]   start in the background (default 5000)
#   localstack/moto.sh stop  [PORT]   stop it and wait until it is gone
#   localstack/moto.sh env   [PORT]   print the exports that point AWS tools at it
#   localstack/moto.sh key-pair PORT REGION NAME   make an EC2 key pair in it
set -euo pipefail
# shellcheck source=localstack/background.sh
source "$(dirname "$0")/background.sh"

MOTO_VERSION="5.2.5"
CACHE="${IHP_INFRA_CACHE:-$HOME/.cache/ihp-infra}"
VENV="$CACHE/moto-$MOTO_VERSION"
RUN_DIR="$CACHE/run"
# moto's server, with the fixes where its answers differ from AWS's.
SERVER="$(cd "$(dirname "$0")" && pwd)/moto-server"
# moto knows no NixOS images: this list replaces its own, in every region.
AMIS="$(cd "$(dirname "$0")" && pwd)/nixos-amis.json"

install() {
  if [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    return 0
  fi
  echo "installing moto $MOTO_VERSION into $VENV" >&2
  need_venv python3
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "moto[server]==$MOTO_VERSION" >&2
}

start() {
  local port="${1:-5000}"
  install
  mkdir -p "$RUN_DIR"
  local pidfile="$RUN_DIR/moto-$port.pid"
  if running "$pidfile"; then
    echo "moto already running on 127.0.0.1:$port (pid $(cat "$pidfile"))" >&2
    return 0
  fi
  MOTO_AMIS_PATH="$AMIS" "$SERVER" -H 127.0.0.1 -p "$port" >"$RUN_DIR/moto-$port.log" 2>&1 &
  echo $! >"$pidfile"
  wait_ready "$pidfile" "http://127.0.0.1:$port/moto-api/" "moto $MOTO_VERSION" "$RUN_DIR/moto-$port.log"
}

stop() {
  stop_pidfile "$RUN_DIR/moto-${1:-5000}.pid"
}

# A key pair in the emulator, as a user would make in the EC2 console.
key_pair() {
  local port="$1" region="$2" name="$3"
  "$VENV/bin/python" - "$port" "$region" "$name" <<'PY'
import sys, boto3
port, region, name = sys.argv[1:4]
ec2 = boto3.client("ec2", region_name=region, endpoint_url=f"http://127.0.0.1:{port}",
                   aws_access_key_id="test", aws_secret_access_key="test")
if not ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"]:
    ec2.create_key_pair(KeyName=name)
PY
}

env_exports() {
  local port="${1:-5000}"
  cat <<EOT
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
unset AWS_PROFILE AWS_SESSION_TOKEN
EOT
}

case "${1:-}" in
  install) install ;;
  path) echo "$SERVER" ;;
  amis) echo "$AMIS" ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  env) shift; env_exports "$@" ;;
  key-pair) shift; key_pair "$@" ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
