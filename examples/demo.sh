#!/usr/bin/env bash
# Charter's main job on the embedded defaults: build the example step, check
# the deployment, seed an order, run the step under its grants, and show a
# plugin that overreaches being refused before any of its code runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash plugins/build.sh >/dev/null
# The same build as the test command, so the two share every artifact.
cargo build --quiet --workspace --all-targets
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

# Governance in the call path: the refund bot asks the payments connector for
# refunds; Cedar (examples/refunds/refunds.cedar) decides on the amount.
cfg=examples/refunds/charter.toml
rm -rf target/charter-data/refunds
echo "==> refunds: 50 USD runs, 2,000 USD waits for a person, 10,000 USD is denied" >&2
$charter check --config "$cfg"
$charter call refund-bot --config "$cfg" --as alice --input '{"order_id":"A-1","amount_cents":5000,"reason":"arrived broken"}'
set +e
$charter call refund-bot --config "$cfg" --as alice --input '{"order_id":"A-2","amount_cents":200000,"reason":"never arrived"}'
$charter call refund-bot --config "$cfg" --as alice --input '{"order_id":"A-3","amount_cents":1000000,"reason":"changed mind"}'
set -e
id=$($charter proposals list --config "$cfg" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["proposals"][0]["id"])')
$charter proposals show "$id" --config "$cfg"
echo "==> alice (owner, initiator) may not approve her own proposal; bob may" >&2
$charter proposals approve "$id" --as alice --config "$cfg" || true
$charter proposals approve "$id" --as bob --comment "carrier confirmed loss" --config "$cfg"
echo "==> the audit trail, its chain, and the KPIs" >&2
$charter audit show --config "$cfg" --plugin refund-bot
$charter audit verify --config "$cfg"
$charter kpi --config "$cfg"
