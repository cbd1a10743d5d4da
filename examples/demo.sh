#!/usr/bin/env bash
# Charter's main job on the embedded defaults: a durable, governed workflow.
# A refund request is triaged by one plugin and refunded by another through a
# payments connector; Cedar decides per call: small refunds run, larger ones
# suspend the run until a refund-approver decides (each command below is a
# separate process: the run survives between them), the largest are denied.
# Then the audit trail, its verified chain and the KPIs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash plugins/build.sh >/dev/null 2>&1 || bash plugins/build.sh
# The same build as the test command, so the two share every artifact.
cargo build --quiet --workspace --all-targets
charter=./target/debug/charter
cfg=examples/refunds/charter.toml
rm -rf target/charter-data/refunds

echo "==> charter check: plugins, grants, policies and the workflow" >&2
$charter check --config "$cfg"
echo "==> seed two orders into the triage step's kv namespace" >&2
$charter kv set refund-triage order:A-1001 @examples/refunds/order-A-1001.json --config "$cfg"
$charter kv set refund-triage order:A-1002 @examples/refunds/order-A-1002.json --config "$cfg"

echo "==> run 1: a 49.99 USD vase arrived broken -> triaged, refunded at once" >&2
$charter run refund-request --config "$cfg" --as carol \
    --input '{"order_id":"A-1001","request":"The vase arrived broken, cracked in two."}'
echo "==> run 2: a 249 USD parcel never arrived -> the refund waits for a person (exit 4)" >&2
set +e
$charter run refund-request --config "$cfg" --as carol \
    --input '{"order_id":"A-1002","request":"The parcel never arrived."}'
code=$?
set -e
echo "(exit code $code: waiting for people)" >&2
[ "$code" -eq 4 ]
$charter runs list --config "$cfg"
id=$($charter proposals list --config "$cfg" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["proposals"][0]["id"])')
$charter proposals show "$id" --config "$cfg"
echo "==> carol started the run, so she may not approve it; bob may, and the run resumes" >&2
set +e
$charter proposals approve "$id" --as carol --config "$cfg"
code=$?
set -e
echo "(exit code $code: refused by governance)" >&2
[ "$code" -eq 2 ]
$charter proposals approve "$id" --as bob --comment "carrier confirmed loss" --config "$cfg"

echo "==> outside policy: a 10,000 USD refund is denied, whoever asks" >&2
set +e
$charter call refund-bot --config "$cfg" --as alice \
    --input '{"order_id":"A-3","amount_cents":1000000,"reason":"changed mind"}'
code=$?
set -e
echo "(exit code $code: refused by governance)" >&2
[ "$code" -eq 2 ]
echo "==> an overreaching deployment (phase 3, write grant, ungranted import) is refused" >&2
set +e
$charter check --config examples/refund-triage/overreach.toml >/dev/null
code=$?
set -e
echo "(exit code $code: refused by governance)" >&2
[ "$code" -eq 2 ]

echo "==> the audit trail of the runs, its chain, and the KPIs" >&2
$charter audit show --config "$cfg" --type step-attempt
$charter audit verify --config "$cfg"
$charter kpi --config "$cfg"
