# Sourced by moto.sh and localstack.sh: a server in the background, known
# by a pid file, waited for over HTTP, stopped and waited for.

# running PIDFILE: whether the server of that pid file runs.
running() {
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# wait_ready PIDFILE URL NAME LOG: until URL answers (30 s at most).
wait_ready() {
  local pidfile="$1" url="$2" name="$3" log="$4"
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then
      echo "$name listening on $(echo "$url" | cut -d/ -f1-3) (pid $(cat "$pidfile"))" >&2
      return 0
    fi
    running "$pidfile" || break
    sleep 0.1
  done
  echo "$name did not start; see $log" >&2
  return 1
}

# stop_pidfile PIDFILE: SIGTERM, wait up to 10 s (moto takes 3 to 4), then SIGKILL.
stop_pidfile() {
  local pidfile="$1"
  [ -f "$pidfile" ] || return 0
  local pid
  pid="$(cat "$pidfile")"
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# Says what is missing, before a venv fails half-way: Debian and Ubuntu
# ship python3 without venv (and ensurepip, which venv needs for pip).
need_venv() {
  local python="$1"
  if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: $python not found: install Python 3 (Debian/Ubuntu: sudo apt install python3 python3-venv; macOS: brew install python)" >&2
    exit 1
  fi
  if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "error: $python can't make virtual environments: install its venv module (Debian/Ubuntu: sudo apt install python3-venv)" >&2
    exit 1
  fi
}
