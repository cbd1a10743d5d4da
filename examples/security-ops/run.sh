#!/usr/bin/env bash
# Security operations, phase 4 (governed autonomy), end to end on the
# embedded defaults: six OCSF Detection Findings, each run through the
# respond-to-finding workflow in its own `charter run` process (so every
# decision below is made by a fresh host reading the same log):
#   score (llm.classify, offline and deterministic, plus fixed rules)
#   -> respond: isolate-host, block-ip through the EDR connector, each
#      decided by soc.cedar and the host's isolation quota.
#
#   bash examples/security-ops/run.sh
#
# CHARTER_BIN=path skips the build (the test suite passes its own binary);
# SEC_OPS_WORK=dir puts the rendered deployment and its data there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
section() { printf '\n==> %s\n' "$1" >&2; shift; [[ $# -eq 0 ]] || printf '    %s\n' "$@" >&2; }
expect() {
  local want=$1 meaning=$2 code=0
  shift 2
  "$@" || code=$?
  echo "(exit code $code: $meaning)" >&2
  [[ $code -eq $want ]] || { echo "run.sh: expected exit code $want" >&2; exit 1; }
}

if [[ -z "${CHARTER_BIN:-}" ]]; then
  section "build: the charter binary and the example's plugins (edr connector, soc-score, soc-respond)"
  cargo build -p charter-cli
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
  (cd plugins && CARGO_TARGET_DIR="$root/target" cargo build --release --target wasm32-wasip2 \
      -p edr-connector -p soc-score -p soc-respond)
  CHARTER_BIN="$root/target/debug/charter"
fi
charter=$CHARTER_BIN
work="${SEC_OPS_WORK:-$root/target/charter-data/security-ops-run}"
rm -rf "$work"
mkdir -p "$work"
# The deployment with absolute paths and its own data directory.
sed -e "s#\"\.\./\.\./target/wasm32-wasip2#\"$root/target/wasm32-wasip2#" \
    -e "s#^data_dir = .*#data_dir = \"$work/data\"#" \
    "$here/charter.toml" > "$work/charter.toml"
cp "$here/soc.cedar" "$work/"
cfg="$work/charter.toml"

section "charter check: phase 4, the bounds in soc.cedar, the quota"
"$charter" check --config "$cfg"
section "the EDR's asset inventory: db-prod-01 is a crown jewel (the connector checks it again)"
"$charter" kv set edr asset:db-prod-01 crown-jewel --config "$cfg"

finding() { "$charter" run respond-to-finding --config "$cfg" --as siem --input "@$here/findings/$1.json"; }

section "finding 1: high severity, web-01 (medium criticality) -> inside the bounds: isolated and blocked, no person" \
  "isolation 1 of 3 this hour"
finding 1-web-01-high
section "finding 2: medium severity, web-02 -> at the edge: the isolation becomes a proposal to the SOC (exit 4)"
expect 4 "waiting for people" finding 2-web-02-medium
section "finding 3: critical severity on db-prod-01, a crown jewel -> denied outright, whoever asks (the run escalates to the SOC)"
expect 4 "escalated to people" finding 3-db-prod-critical
section "findings 4 and 5: high severity on web-03 and web-04 -> inside the bounds: isolations 2 and 3 of 3"
finding 4-web-03-high
finding 5-web-04-high
section "finding 6: high severity on web-05, inside the policy's bounds, but the quota is reached" \
  "The host counted 3 isolations this hour from the log (three processes ago); the 4th becomes a proposal to the SOC."
expect 4 "waiting for people" finding 6-web-05-high

section "the SOC's inbox: the edge case and the call over the quota"
"$charter" proposals list --config "$cfg"
quota_proposal=$("$charter" proposals list --config "$cfg" --json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["proposals"]:
    if "quota:isolations" in p.get("policies", []):
        print(p["id"])')
section "sam (soc) approves the 4th isolation: a person is the bound now; the run resumes and executes it"
"$charter" proposals approve "$quota_proposal" --as sam --comment "second wave confirmed" --config "$cfg"

section "what the EDR did (its ledger): three isolations inside the bounds, one approved, the blocks"
"$charter" kv list edr --config "$cfg"
section "every decision on the EDR calls: allowed, proposed (edge, quota), denied (crown jewel)"
"$charter" audit show --plugin soc-respond --type call --config "$cfg"
section "the audit log's hash chain is intact"
"$charter" audit verify --config "$cfg"
section "the KPIs: unauthorized actions executed (target 0), blocked attempts, proposals"
"$charter" kpi --config "$cfg"
section "done: allowed inside the bounds, proposed at the edge and over the quota, denied on the crown jewel"
