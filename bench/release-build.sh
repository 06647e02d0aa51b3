#!/usr/bin/env bash
# A clean release build of ihp-infra at each given commit (default: HEAD),
# each in a target directory of its own: crates compiled, CPU time (user +
# sys, which doesn't depend on what else the machine does), wall time, peak
# memory of the largest compiler process, and the binary's size.
# Prints one JSON line per commit; with --save, writes them to
# bench/results/<date>-release-build.json.
# NICE=19 lets it run beside other work: the CPU time stays comparable, the
# wall time doesn't.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
save=0
commits=()
for arg in "$@"; do
  if [ "$arg" = --save ]; then save=1; else commits+=("$arg"); fi
done
[ ${#commits[@]} -gt 0 ] || commits=(HEAD)
work="$(mktemp -d)"
cleanup() {
  for c in "${commits[@]}"; do git -C "$ROOT" worktree remove --force "$work/src-$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
out=()
for c in "${commits[@]}"; do
  rev="$(git -C "$ROOT" rev-parse --short "$c")"
  git -C "$ROOT" worktree add --detach "$work/src-$c" "$rev" >/dev/null 2>&1
  (cd "$work/src-$c" && cargo fetch --locked --quiet)
  start=$(date +%s.%N)
  (cd "$work/src-$c" && CARGO_TARGET_DIR="$work/target-$c" /usr/bin/time -f '%U %S %M' -o "$work/time-$c" \
     nice -n "${NICE:-0}" cargo build --release --locked --offline 2>"$work/log-$c")
  end=$(date +%s.%N)
  read -r user sys rss <"$work/time-$c"
  units=$(grep -c '^ *Compiling ' "$work/log-$c" || true)
  size=$(wc -c <"$work/target-$c/release/ihp-infra")
  line=$(printf '{"date": "%s", "commit": "%s", "rustc": "%s", "crates_compiled": %d, "cpu_seconds": %.0f, "wall_seconds": %.0f, "nice": %d, "max_rss_mb": %d, "binary_bytes": %d}' \
    "$(date -u +%Y-%m-%d)" "$rev" "$(rustc --version | cut -d' ' -f2)" "$units" "$(echo "$user + $sys" | bc)" \
    "$(echo "$end - $start" | bc)" "${NICE:-0}" "$((rss / 1024))" "$size")
  echo "$line"
  out+=("$line")
  rm -rf "$work/target-$c"
done
if [ $save = 1 ]; then printf '%s\n' "${out[@]}" >"$ROOT/bench/results/$(date -u +%Y-%m-%d)-release-build.json"; fi
