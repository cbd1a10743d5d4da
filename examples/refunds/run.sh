#!/usr/bin/env bash
# Refund management, phase 5 ("AI proposes, human decides"), end to end on
# the embedded defaults: an AI agent, support-copilot, reaches the refunds
# deployment's tools over MCP (`charter mcp`, stdio) and asks for refunds;
# copilot.cedar makes every one of them a proposal, even a refund of one
# cent, so nothing reaches the payments API while they wait. A person then
# decides in the inbox through `charter up`'s API (what the console does):
# sam, who lacks the refund-approver role, is refused; bob approves one and
# rejects the other; only the approved refund reaches the payments API.
# A local stand-in (standins.py) plays the payments API and records every
# request it receives.
#
#   bash examples/refunds/run.sh
#
# CHARTER_BIN=path skips the build (the test suite passes its own binary);
# REFUNDS_WORK=dir puts the rendered deployment, the data and the records there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
section() { printf '\n==> %s\n' "$1" >&2; shift; [[ $# -eq 0 ]] || printf '    %s\n' "$@" >&2; }

if [[ -z "${CHARTER_BIN:-}" ]]; then
  section "build: the charter binary and the example's plugins (payments-api connector, orders tool)"
  cargo build -p charter-cli
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
  (cd plugins && CARGO_TARGET_DIR="$root/target" cargo build --release --target wasm32-wasip2 \
      -p payments-api -p fx-orders-tool)
  CHARTER_BIN="$root/target/debug/charter"
fi
charter=$CHARTER_BIN
work="${REFUNDS_WORK:-$root/target/charter-data/refunds-run}"
rm -rf "$work"
mkdir -p "$work"
standins=""
up=""
cleanup() {
  [[ -z "$up" ]] || kill -TERM "$up" 2>/dev/null || true
  [[ -z "$standins" ]] || kill "$standins" 2>/dev/null || true
}
trap cleanup EXIT
unset CHARTER_TOKEN CHARTER_SERVER
export PAYMENTS_API_KEY=sk_test_refunds_example

section "the stand-in: the payments team's refund API (POST /v1/refunds, bearer key)"
python3 "$here/standins.py" "$work" "$PAYMENTS_API_KEY" &
standins=$!
for _ in $(seq 100); do [[ -f "$work/ports.json" ]] && break; sleep 0.1; done
api=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['payments'])" "$work/ports.json")
echo "payments API 127.0.0.1:$api" >&2

section "the deployment (copilot.toml), rendered with the stand-in's port and the identities' token hashes"
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
copilot_json=$("$charter" tokens create support-copilot --json)
bob_json=$("$charter" tokens create bob --json)
sam_json=$("$charter" tokens create sam --json)
erin_json=$("$charter" tokens create erin --json)
copilot=$(field "$copilot_json" token); bob=$(field "$bob_json" token); sam=$(field "$sam_json" token)
erin=$(field "$erin_json" token)
python3 - "$here/copilot.toml" "$work/charter.toml" "$root" "$work" "$api" \
  "$(field "$bob_json" hash)" "$(field "$copilot_json" hash)" "$(field "$sam_json" hash)" \
  "$(field "$erin_json" hash)" <<'PY'
import sys
src, dst, root, work, port, *hashes = sys.argv[1:]
s = open(src).read()
s = s.replace("127.0.0.1:18481", f"127.0.0.1:{port}")
s = s.replace('"../../target/charter-data/refunds-copilot"', f'"{work}/data"')
s = s.replace('"../../target/', f'"{root}/target/').replace('"../../plugins/', f'"{root}/plugins/')
for h in hashes:  # bob, support-copilot, sam, erin: in the file's order
    s = s.replace("tokens = []", f'tokens = ["{h}"]', 1)
open(dst, "w").write(s)
PY
cp "$here/copilot.cedar" "$work/copilot.cedar"
cfg="$work/charter.toml"
"$charter" check --config "$cfg"
echo "erin (operator) points the connector at the payments API:" >&2
CHARTER_TOKEN=$erin "$charter" kv set payments-api settings:endpoint "127.0.0.1:$api" --config "$cfg"

section "support-copilot over MCP (charter mcp, stdio): it looks an order up, then asks for refunds" \
  "4200 cents on A-1001, ONE cent on A-1002, a test order, and a function its policy does not permit."
CHARTER_TOKEN=$copilot python3 "$here/copilot_session.py" "$charter" "$cfg" "$work/session.json"

section "what reached the payments API so far: nothing (every refund waits for a person)"
cp "$work/records.jsonl" "$work/records-before-approval.jsonl"
n=$(wc -l < "$work/records-before-approval.jsonl")
echo "payments API requests received: $n" >&2
[[ $n -eq 0 ]] || { echo "run.sh: a refund reached the payments API before anyone approved it" >&2; exit 1; }
"$charter" proposals list --config "$cfg"
pid() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]['structured']['pending_approval']['proposal'])" "$work/session.json" "$1"; }
refund=$(pid refund); cent=$(pid one-cent)

section "charter up: the inbox's API (POST /v1/proposals/ID/approve|reject, as the console does)"
"$charter" up --config "$cfg" --listen 127.0.0.1:0 > "$work/up.log" 2> "$work/up.err" &
up=$!
for _ in $(seq 300); do grep -q "serving" "$work/up.log" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's#.*serving .* at \(http://[^ ]*\).*#\1#p' "$work/up.log")
[[ -n "$addr" ]] || { cat "$work/up.err" >&2; echo "run.sh: charter up did not start" >&2; exit 1; }
echo "charter up at $addr" >&2
export CHARTER_SERVER=$addr

section "sam (support, no refund-approver role) approves the 42.00 refund: refused, recorded"
code=0
CHARTER_TOKEN=$sam "$charter" proposals approve "$refund" --config "$cfg" --comment "looks fine to me" || code=$?
echo "(exit code $code: refused)" >&2
[[ $code -ne 0 ]] || { echo "run.sh: sam's approval was accepted" >&2; exit 1; }

section "support-copilot's own token approves its refund: refused (an agent decides nothing)"
code=0
CHARTER_TOKEN=$copilot "$charter" proposals approve "$refund" --config "$cfg" || code=$?
echo "(exit code $code: refused)" >&2
[[ $code -ne 0 ]] || { echo "run.sh: the agent approved its own refund" >&2; exit 1; }

section "bob (refund-approver) approves the 42.00 refund: the connector calls the payments API, once"
CHARTER_TOKEN=$bob "$charter" proposals approve "$refund" --config "$cfg" --comment "nine days late: refund the shipping"

section "bob rejects the one-cent refund: it never executes"
CHARTER_TOKEN=$bob "$charter" proposals reject "$cent" --config "$cfg" --comment "no reason given for a refund"
CHARTER_TOKEN=$bob "$charter" proposals list --all --config "$cfg"
# The framework's table as the host serves it (GET /v1/kpi/framework, what
# the console's KPI page shows), kept for the test to compare.
CHARTER_TOKEN=$bob "$charter" kpi --framework --json --config "$cfg" > "$work/framework-served.json"

section "stop charter up (SIGTERM), then what the payments API received, the audit trail and the KPIs"
kill -TERM "$up"; wait "$up" || true; up=""
unset CHARTER_SERVER
python3 - "$work/records.jsonl" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
print(f"payments API requests received: {len(recs)}")
for r in recs:
    f = r["form"] or {}
    print(f"  {r['method']} {r['path']}  order={f.get('order')} amount={f.get('amount')} "
          f"authorized={r['authorized']} idempotency-key={r['idempotency_key']} -> {r['status']}")
PY
"$charter" audit verify --config "$cfg"
"$charter" kpi --framework --config "$cfg"
section "done: every refund was a proposal; one approved and paid once, one rejected and never paid"
