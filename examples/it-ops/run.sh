#!/usr/bin/env bash
# IT-ops auto-remediation, phase 1 (deterministic), end to end on the
# embedded defaults: `charter up` receives Prometheus Alertmanager webhooks,
# checks the service the alert names, restarts it through the orchestrator's
# API and checks again (retries with backoff); a service that stays down
# pages on-call through notify and the run is escalated to them. Local
# stand-ins (standins.py) play the services, the orchestrator and the
# pager, and record every request they receive.
#
#   bash examples/it-ops/run.sh
#
# CHARTER_BIN=path skips the build (the test suite passes its own binary);
# IT_OPS_WORK=dir puts the rendered deployment, the data and the records there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
section() { printf '\n==> %s\n' "$1" >&2; shift; [[ $# -eq 0 ]] || printf '    %s\n' "$@" >&2; }

if [[ -z "${CHARTER_BIN:-}" ]]; then
  section "build: the charter binary and the example's plugins (ops-probe, ops-restart, ops-page)"
  cargo build -p charter-cli
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
  (cd plugins && CARGO_TARGET_DIR="$root/target" cargo build --release --target wasm32-wasip2 \
      -p ops-probe -p ops-restart -p ops-page -p refund-triage)
  CHARTER_BIN="$root/target/debug/charter"
fi
charter=$CHARTER_BIN
work="${IT_OPS_WORK:-$root/target/charter-data/it-ops-run}"
rm -rf "$work"
mkdir -p "$work"
standins=""
up=""
cleanup() {
  [[ -z "$up" ]] || kill -TERM "$up" 2>/dev/null || true
  [[ -z "$standins" ]] || kill "$standins" 2>/dev/null || true
}
trap cleanup EXIT

section "phase 1 is deterministic: a deployment granting any llm function is refused at load" \
  "examples/it-ops/llm-refused.toml grants charter:host/llm.classify to an 'alert triage' plugin (exit 2)."
code=0
"$charter" check --config "$here/llm-refused.toml" || code=$?
echo "(exit code $code: refused by governance)" >&2
[[ $code -eq 2 ]] || { echo "run.sh: expected the llm grant to be refused (exit 2)" >&2; exit 1; }

section "the stand-ins: services (health checks), orchestrator (restarts), pager (on-call)"
python3 "$here/standins.py" "$work" &
standins=$!
for _ in $(seq 100); do [[ -f "$work/ports.json" ]] && break; sleep 0.1; done
port() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/ports.json" "$1"; }
svc=$(port services); orch=$(port orchestrator); pager=$(port pager)
echo "services 127.0.0.1:$svc, orchestrator 127.0.0.1:$orch, pager 127.0.0.1:$pager" >&2

section "the deployment, rendered with the stand-ins' ports and the identities' token hashes"
am_json=$("$charter" tokens create alertmanager --json)
pat_json=$("$charter" tokens create pat --json)
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
am_token=$(field "$am_json" token); pat_token=$(field "$pat_json" token)
sed -e "s#127.0.0.1:18931#127.0.0.1:$svc#g" \
    -e "s#127.0.0.1:18932#127.0.0.1:$orch#g" \
    -e "s#127.0.0.1:18933#127.0.0.1:$pager#g" \
    -e "s#\"\.\./\.\./target/wasm32-wasip2#\"$root/target/wasm32-wasip2#" \
    -e "s#^data_dir = .*#data_dir = \"$work/data\"#" \
    -e "s#^\[identities.alertmanager\]\$#&\ntokens = [\"$(field "$am_json" hash)\"]#" \
    -e "s#^\[identities.pat\]\$#&\ntokens = [\"$(field "$pat_json" hash)\"]#" \
    "$here/charter.toml" > "$work/charter.toml"
for a in checkout payments crafted; do
  sed -e "s#127.0.0.1:18931#127.0.0.1:$svc#g" -e "s#127.0.0.1:18932#127.0.0.1:$orch#g" \
    "$here/alert-$a.json" > "$work/alert-$a.json"
done
cfg="$work/charter.toml"
"$charter" check --config "$cfg"

section "charter up: the webhook POST /hooks/alertmanager, the run timers (retries fire on time)"
"$charter" up --config "$cfg" --listen 127.0.0.1:0 > "$work/up.log" 2> "$work/up.err" &
up=$!
for _ in $(seq 300); do grep -q "serving" "$work/up.log" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's#.*serving .* at \(http://[^ ]*\).*#\1#p' "$work/up.log")
[[ -n "$addr" ]] || { cat "$work/up.err" >&2; echo "run.sh: charter up did not start" >&2; exit 1; }
echo "charter up at $addr" >&2
export CHARTER_TOKEN=$pat_token

# Deliver one alert; wait for its run to stop moving; show it.
deliver() {
  local name=$1 delivery=$2 want=$3
  local answer run status=""
  answer=$(python3 "$here/standins.py" post "$addr/hooks/alertmanager" "$work/alert-$name.json" "$am_token" "$delivery")
  echo "POST /hooks/alertmanager -> $answer" >&2
  run=$(python3 -c "import json,sys; print(json.loads(sys.argv[1].split(' ',1)[1])['run'])" "$answer")
  for _ in $(seq 600); do
    status=$("$charter" runs show "$run" --config "$cfg" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['status'])")
    [[ $status == completed || $status == escalated || $status == failed ]] && break
    sleep 0.1
  done
  "$charter" runs show "$run" --config "$cfg"
  [[ $status == "$want" ]] || { echo "run.sh: run $run ended $status, expected $want" >&2; exit 1; }
  echo "$run" > "$work/run-$name"
}

section "scenario 1: checkout is down -> diagnosed, restarted (the orchestrator is busy once: retried with backoff under the same idempotency key), verified healthy" \
  "The run completes; nobody is woken up."
deliver checkout "am-checkout-3f5a1c9e2b7d4a60" completed

section "scenario 2: payments is down and a restart does not help -> verify retries with backoff, then on-call is paged and the run escalated to them"
deliver payments "am-payments-9c04e1b2d3a7f815" escalated
"$charter" escalations list --config "$cfg"

section "scenario 3: a crafted alert whose instance label names the orchestrator" \
  "The health check's grant reaches only the services' host: the call is denied before anything is sent, the step fails closed, the run is escalated."
deliver crafted "am-inventory-5d1e0a77c2b94f3e" escalated

section "what the stand-ins received (records.jsonl): health checks, restarts with their idempotency keys, the page"
python3 - "$work/records.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    extra = f"  idempotency-key={r['idempotency_key']}" if r["idempotency_key"] else ""
    if r["listener"] == "pager":
        extra = "  " + json.dumps(r["body"]["text"])[:160]
    print(f"{r['listener']:<12} {r['method']:<4} {r['path']:<34} -> {r['status']}{extra}")
PY

section "stop charter up (SIGTERM), then the audit trail and the KPIs offline"
kill -TERM "$up"; wait "$up" || true; up=""
unset CHARTER_TOKEN
"$charter" audit verify --config "$cfg"
"$charter" kpi --config "$cfg"
section "done: phase 1 refused AI, remediated checkout, escalated payments to on-call, denied the crafted alert"
