#!/usr/bin/env bash
# How long `ihp-infra adopt` takes, and how many AWS calls it makes, for the
# IHP boilerplate's stack as its Terraform makes it (tests/terraform/
# boilerplate, run by the machine's Terraform against a pinned moto).
# Prints one JSON line; writes it to bench/results/<date>-adopt.json with
# --save. Needs terraform and its AWS provider mirror (TF_PLUGIN_MIRROR,
# default /opt/tf-plugins).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PORT="${PORT:-5091}"
REGION=eu-central-1
PREFIX=adoptbench
KEY=bench-key
PASSWORD="Bench-password-123"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ihp-infra/target}"
# PROFILE=dev measures the test build (adopt waits on AWS, not on the CPU;
# the password hash is optimised in both), without a release build.
PROFILE="${PROFILE:-release}"
cargo build --profile "$PROFILE" --locked --quiet --manifest-path "$ROOT/Cargo.toml"
if [ "$PROFILE" = dev ]; then BIN="$CARGO_TARGET_DIR/debug/ihp-infra"; else BIN="$CARGO_TARGET_DIR/$PROFILE/ihp-infra"; fi
work="$(mktemp -d)"
cleanup() { "$ROOT/localstack/moto.sh" stop "$PORT" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"$ROOT/localstack/moto.sh" install >/dev/null
"$ROOT/localstack/moto.sh" start "$PORT" >/dev/null
eval "$("$ROOT/localstack/moto.sh" env "$PORT")"
"$ROOT/localstack/moto.sh" key-pair "$PORT" "$REGION" "$KEY" >/dev/null

mkdir "$work/IaC"
cp "$ROOT/tests/terraform/boilerplate/main.tf" "$work/IaC/"
sed "s|MIRROR|${TF_PLUGIN_MIRROR:-/opt/tf-plugins}|" "$ROOT/bench/terraform/offline.tfrc" >"$work/IaC/offline.tfrc"
(
  cd "$work/IaC"
  export TF_CLI_CONFIG_FILE="$work/IaC/offline.tfrc" TF_IN_AUTOMATION=1 TF_INPUT=0
  export TF_VAR_endpoint="$AWS_ENDPOINT_URL" TF_VAR_prefix="$PREFIX" TF_VAR_region="$REGION"
  export TF_VAR_az_1="${REGION}a" TF_VAR_az_2="${REGION}b" TF_VAR_key_name="$KEY"
  export TF_VAR_ami=ami-0a11c0ffee0251101 TF_VAR_db_password="$PASSWORD"
  terraform init -no-color >/dev/null
  terraform apply -auto-approve -no-color >/dev/null
)
cat >"$work/stack.yaml" <<YAML
prefix: $PREFIX
region: $REGION
az_1: ${REGION}a
az_2: ${REGION}b
key_name: $KEY
db_password: { env: BENCH_DB_PASSWORD }
YAML
cd "$work"
start=$(date +%s.%N)
BENCH_DB_PASSWORD="$PASSWORD" "$BIN" adopt --from-terraform IaC/terraform.tfstate --auto-approve -v \
  >adopt.out 2>adopt.err
end=$(date +%s.%N)
calls=$(sed -n 's/.*adopted.*calls=\([0-9]*\).*/\1/p' adopt.err | tail -1)
taken=$(sed -n 's/.*taken_over=\([0-9]*\).*/\1/p' adopt.err | tail -1)
line=$(printf '{"date": "%s", "commit": "%s", "profile": "%s", "moto": "5.2.5", "taken_over": %s, "calls": %s, "seconds": %.2f}' \
  "$(date -u +%Y-%m-%d)" "$(git -C "$ROOT" rev-parse --short HEAD)" "$PROFILE" "$taken" "$calls" "$(echo "$end - $start" | bc)")
echo "$line"
if [ "${1:-}" = "--save" ]; then
  echo "$line" >"$ROOT/bench/results/$(date -u +%Y-%m-%d)-adopt.json"
fi
