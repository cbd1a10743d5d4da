#!/usr/bin/env bash
# Charter's main job on the embedded defaults: a durable, governed workflow.
# A refund request is triaged by one plugin and refunded by another through a
# payments connector; Cedar decides per call: small refunds run, larger ones
# suspend the run until a refund-approver decides (each command below is a
# separate process: the run survives between them), the largest are denied.
# Then the audit trail, its verified chain and the KPIs.
#
# Logging is quiet unless asked: CHARTER_LOG=debug (or RUST_LOG) shows the
# host's full tracing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start=$SECONDS
# A section: what is about to be shown, and why it matters.
section() {
  printf '\n==> [%ss] %s\n' "$((SECONDS - start))" "$1" >&2
  shift
  [[ $# -eq 0 ]] || printf '    %s\n' "$@" >&2
}
# Run a command that must exit with CODE (what it means said after it).
expect() {
  local want=$1 meaning=$2
  shift 2
  local code=0
  "$@" || code=$?
  echo "(exit code $code: $meaning)" >&2
  [[ $code -eq $want ]] || { echo "demo: expected exit code $want" >&2; exit 1; }
}

if [[ ! -x target/debug/charter ]]; then
  cat >&2 <<'EOF'
First run: building the charter binary and the example plugins from source.
wasmtime (the WebAssembly engine) and Cedar (the policy engine) are most of it:
up to about 15 minutes on 2 cores, once. Everything is cached in target/, which
`bash tests/run.sh` shares: later runs start in seconds.
EOF
fi
section "build: the charter binary (cargo build -p charter-cli)"
# The test command's profile and features, in the same target/: its
# `cargo build --workspace --all-targets` reuses all of this.
cargo build -p charter-cli
section "build: the demo's plugins (payments connector, refund bot, refund triage; Rust -> wasm32-wasip2)"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
# fx-ungranted: the overreaching deployment names it. plugins/build.sh builds
# every plugin and fixture, in every language.
(cd plugins && CARGO_TARGET_DIR="$root/target" cargo build --release --target wasm32-wasip2 \
    -p payments-connector -p refund-bot -p refund-triage -p fx-ungranted)
charter=./target/debug/charter
cfg=examples/refunds/charter.toml
rm -rf target/charter-data/refunds

section "charter check: the deployment is reviewed before anything runs" \
  "Each plugin's imports are compared with what its action groups grant; Cedar policies and the workflow are validated."
$charter check --config "$cfg"
section "seed two orders into the triage step's key-value namespace"
$charter kv set refund-triage order:A-1001 @examples/refunds/order-A-1001.json --config "$cfg"
$charter kv set refund-triage order:A-1002 @examples/refunds/order-A-1002.json --config "$cfg"

section "run 1: a 49.99 USD vase arrived broken -> triaged, refunded at once" \
  "refunds.cedar permits refunds up to 100 USD outright: the call executes, no person involved."
$charter run refund-request --config "$cfg" --as carol \
    --input '{"order_id":"A-1001","request":"The vase arrived broken, cracked in two."}'

section "run 2: a 249 USD parcel never arrived -> the refund waits for a person" \
  "Up to 5,000 USD needs a refund-approver: the call becomes a proposal, nothing is paid, and the run is stored durably (exit 4)."
expect 4 "waiting for people" $charter run refund-request --config "$cfg" --as carol \
    --input '{"order_id":"A-1002","request":"The parcel never arrived."}'
$charter runs list --config "$cfg"
run2=$($charter runs list --status waiting-approval --config "$cfg" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["id"])')
id=$($charter proposals list --config "$cfg" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["proposals"][0]["id"])')
section "the proposal an approver reviews: the exact call, its arguments, the model's rationale, the policy that held it"
$charter proposals show "$id" --config "$cfg"

section "separation of duties: carol started the run, so she may not approve its refund" \
  "Holding the refund-approver role is not enough; the attempt is refused and recorded (exit 2)."
expect 2 "refused by governance" $charter proposals approve "$id" --as carol --config "$cfg"
section "bob approves: the run resumes in this process, the journal replays what already happened, the approved call executes"
$charter proposals approve "$id" --as bob --comment "carrier confirmed loss" --config "$cfg"
section "run 2's record: every step attempt, and who decided on its refund (the refusal and bob's comment included)"
$charter runs show "$run2" --config "$cfg"

section "outside policy: a 10,000 USD refund is denied, whoever asks" \
  "No policy permits it, so there is nothing to approve; the call never reaches the payments connector (exit 2)."
expect 2 "refused by governance" $charter call refund-bot --config "$cfg" --as alice \
    --input '{"order_id":"A-3","amount_cents":1000000,"reason":"changed mind"}'

section "an overreaching deployment is refused before any plugin code runs" \
  "examples/refund-triage/overreach.toml: an analysis-only (phase 3) deployment granting a write group, and a plugin importing functions it was not granted (exit 2)."
expect 2 "refused by governance" $charter check --config examples/refund-triage/overreach.toml

section "the audit trail of the proposal: the held call, the refused and the accepted approval, the executed refund"
$charter audit show --proposal "$id" --config "$cfg"
section "every decision on refund-bot's calls to the payments connector: allowed, proposed, allowed after approval, denied"
$charter audit show --plugin refund-bot --type call --config "$cfg"
section "the audit log's hash chain is intact: no entry was changed, removed or reordered"
$charter audit verify --config "$cfg"
section "the KPIs: unauthorized actions executed (target 0), blocked attempts, proposals, cycle time, handoffs"
$charter kpi --config "$cfg"
section "done: the governed workflow, the approvals, the denials and the audit trail above"
