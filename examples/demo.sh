#!/usr/bin/env bash
# Charter's main job on the embedded defaults: build the example step, check
# the deployment, seed an order, run the step under its grants, and show a
# plugin that overreaches being refused before any of its code runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash plugins/build.sh >/dev/null
cargo build --quiet -p charter-cli
charter=./target/debug/charter
cfg=examples/refund-triage/charter.toml

echo "==> charter check" >&2
$charter check --config "$cfg"
echo "==> seed order A-1001 into refund-triage's kv namespace" >&2
$charter kv set refund-triage order:A-1001 @examples/refund-triage/order-A-1001.json --config "$cfg"
echo "==> charter call refund-triage" >&2
$charter call refund-triage --config "$cfg" --input @examples/refund-triage/request.json
echo "==> an overreaching deployment (phase 3, write grant, ungranted import) is refused" >&2
set +e
$charter check --config examples/refund-triage/overreach.toml
code=$?
set -e
echo "(exit code $code: refused by governance)" >&2
[ "$code" -eq 2 ]
