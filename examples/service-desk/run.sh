#!/usr/bin/env bash
# The voice service desk, phase 2 ("supervised narrow interaction"), end to
# end on the embedded defaults: three post-call webhooks in Retell's shape
# (calls/*.json) each start a run of post-call. The confident, calm call gets
# a case and an automated text; the angry caller and the unclear call get a
# case and a person (the run escalates to service-agent; no text is sent).
# Local stand-ins record what the ticketing and SMS APIs receive
# (target/charter-data/service-desk-standins.jsonl); then the KPIs:
# resolution confidence and handoff rate.
#
# CHARTER_BIN=path skips the build (the test suite passes its own binary).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
section() {
  printf '\n==> %s\n' "$1" >&2
  shift
  [[ $# -eq 0 ]] || printf '    %s\n' "$@" >&2
}
expect() {
  local want=$1 meaning=$2
  shift 2
  local code=0
  "$@" || code=$?
  echo "(exit code $code: $meaning)" >&2
  [[ $code -eq $want ]] || { echo "run.sh: expected exit code $want" >&2; exit 1; }
}

if [[ -z "${CHARTER_BIN:-}" ]]; then
  section "build: the charter binary and the service-desk plugin"
  cargo build -p charter-cli
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
  (cd plugins && CARGO_TARGET_DIR="$root/target" cargo build --release --target wasm32-wasip2 -p service-desk -p service-desk-cases -p service-desk-sms)
fi
charter="${CHARTER_BIN:-./target/debug/charter}"
cfg=examples/service-desk/charter.toml
record="${SERVICE_DESK_RECORD:-target/charter-data/service-desk-standins.jsonl}"
rm -rf target/charter-data/service-desk
mkdir -p "$(dirname "$record")"
: > "$record"
export SMS_AUTH_TOKEN=test-auth-token RETELL_HOOK_KEY=test-hook-key
account=AC00000000000000000000000000000001

section "stand-ins: a ticketing API on 127.0.0.1:18471, an SMS API (Twilio's Messages shape) on 127.0.0.1:18472"
python3 -u examples/service-desk/standins.py 18471 18472 "$record" "$account" "$SMS_AUTH_TOKEN" > "$record.out" 2>&1 &
standins=$!
trap 'kill $standins 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do grep -q ready "$record.out" 2>/dev/null && break; sleep 0.1; done

section "charter check: phase 2; the classifier has no network, the case opener one host, the texter one host and its token"
$charter check --config "$cfg"

call() {
  local file=$1 want=$2 meaning=$3
  section "call: $file"
  expect "$want" "$meaning" $charter run post-call --config "$cfg" --input "@examples/service-desk/calls/$file"
}
call password-reset.json 0 "completed: case opened, caller texted"
call double-charge-angry.json 4 "handed to a person: negative sentiment"
call unclear.json 4 "handed to a person: low confidence"

section "the escalations waiting for a service agent (no automated reply was sent for these)"
$charter escalations list --config "$cfg"

section "what the stand-ins received: three cases, one text"
python3 - "$record" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["service"] == "ticketing":
        t = e["ticket"]
        print(f"ticketing  case {e['id']}: {t['subject']}  tags={t['tags']}  priority={t['priority']}")
    else:
        f = e["form"]
        print(f"sms        {e['path']}  authorized={e['authorized']}  To={f.get('To')}  Body={f.get('Body')!r}")
PY

section "KPIs: the framework's table (resolution confidence and handoff rate under customer), from the event log"
$charter kpi --framework --config "$cfg"
section "the same log's detailed KPIs"
$charter kpi --config "$cfg"
section "done: one automated resolution, two handoffs, every call with a case"
