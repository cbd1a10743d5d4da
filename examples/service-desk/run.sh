#!/usr/bin/env bash
# The voice service desk, phase 2 ("supervised narrow interaction"), end to
# end on the embedded defaults: `charter up` receives the voice platform's
# post-call webhooks (Retell's shape, calls/*.json) at POST /hooks/retell,
# signed with the hook's secret; each starts a run of post-call. The
# confident, calm call gets a case and an automated text; the angry caller
# and the unclear call get a case and a person (the run escalates to
# service-agent; no text is sent); a delivery of another shape (a
# call_started event) is refused and starts nothing. Local stand-ins record
# what the ticketing and SMS APIs receive (standins.jsonl in the work
# directory); then the KPIs: resolution confidence and handoff rate.
#
# CHARTER_BIN=path skips the build (the test suite passes its own binary);
# SERVICE_DESK_WORK=dir puts the rendered deployment, the data and the
# records there (default target/charter-data/service-desk-run).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
section() {
  printf '\n==> %s\n' "$1" >&2
  shift
  [[ $# -eq 0 ]] || printf '    %s\n' "$@" >&2
}

if [[ -z "${CHARTER_BIN:-}" ]]; then
  section "build: the charter binary and the service-desk plugin"
  cargo build -p charter-cli
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
  (cd plugins && CARGO_TARGET_DIR="$root/target" cargo build --release --target wasm32-wasip2 -p service-desk -p service-desk-cases -p service-desk-sms)
fi
charter="${CHARTER_BIN:-./target/debug/charter}"
work="${SERVICE_DESK_WORK:-$root/target/charter-data/service-desk-run}"
rm -rf "$work"
mkdir -p "$work"
record="$work/standins.jsonl"
: > "$record"
unset CHARTER_TOKEN CHARTER_SERVER
export SMS_AUTH_TOKEN=test-auth-token RETELL_HOOK_KEY=retell-example-hook-key-0001
account=AC00000000000000000000000000000001
standins=""
up=""
cleanup() {
  [[ -z "$up" ]] || kill -TERM "$up" 2>/dev/null || true
  [[ -z "$standins" ]] || kill "$standins" 2>/dev/null || true
}
trap cleanup EXIT

section "stand-ins: a ticketing API on 127.0.0.1:18471, an SMS API (Twilio's Messages shape) on 127.0.0.1:18472"
python3 -u examples/service-desk/standins.py 18471 18472 "$record" "$account" "$SMS_AUTH_TOKEN" > "$record.out" 2>&1 &
standins=$!
for _ in $(seq 1 50); do grep -q ready "$record.out" 2>/dev/null && break; sleep 0.1; done

section "the deployment, rendered with sam's token hash (charter up's API takes tokens only)"
sam_json=$($charter tokens create sam --json)
python3 - examples/service-desk/charter.toml "$work/charter.toml" "$root" "$work" "$sam_json" <<'PY'
import json, sys
src, dst, root, work, sam = sys.argv[1:]
s = open(src).read()
s = s.replace('"../../target/charter-data/service-desk"', f'"{work}/data"')
s = s.replace('"../../target/', f'"{root}/target/')
s = s.replace('[identities.sam]\n', f'[identities.sam]\ntokens = ["{json.loads(sam)["hash"]}"]\n', 1)
open(dst, "w").write(s)
PY
cfg="$work/charter.toml"

section "charter check: phase 2; the classifier has no network, the case opener one host, the texter one host and its token"
$charter check --config "$cfg"

section "charter up: the voice platform's webhook, POST /hooks/retell (HMAC-SHA256 of the body, the call id as delivery id)"
$charter up --config "$cfg" --listen 127.0.0.1:0 > "$work/up.log" 2> "$work/up.err" &
up=$!
for _ in $(seq 300); do grep -q "serving" "$work/up.log" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's#.*serving .* at \(http://[^ ]*\).*#\1#p' "$work/up.log")
[[ -n "$addr" ]] || { cat "$work/up.err" >&2; echo "run.sh: charter up did not start" >&2; exit 1; }
echo "charter up at $addr" >&2

# Deliver one call; wait for its run to stop moving; show it.
call() {
  local file=$1 want=$2 meaning=$3
  local answer run status=""
  section "call: $file"
  answer=$(python3 examples/service-desk/deliver.py "$addr/hooks/retell" "examples/service-desk/calls/$file" "$RETELL_HOOK_KEY")
  echo "POST /hooks/retell -> $answer" >&2
  run=$(python3 -c "import json,sys; print(json.loads(sys.argv[1].split(' ',1)[1])['run'])" "$answer")
  for _ in $(seq 300); do
    status=$($charter runs show "$run" --config "$cfg" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['status'])")
    [[ $status == completed || $status == escalated || $status == failed ]] && break
    sleep 0.1
  done
  $charter runs show "$run" --config "$cfg"
  echo "(run $status: $meaning)" >&2
  [[ $status == "$want" ]] || { echo "run.sh: run $run ended $status, expected $want" >&2; exit 1; }
}
call password-reset.json completed "case opened, caller texted"
call double-charge-angry.json escalated "handed to a person: negative sentiment"
call unclear.json escalated "handed to a person: low confidence"

section "a delivery of another shape: a call_started event (no transcript yet) is refused, recorded, and starts nothing"
answer=$(python3 examples/service-desk/deliver.py "$addr/hooks/retell" examples/service-desk/calls/call-started.json "$RETELL_HOOK_KEY")
echo "POST /hooks/retell -> $answer" >&2
[[ $answer == 422\ * ]] || { echo "run.sh: expected the call_started delivery to be refused (422)" >&2; exit 1; }

section "stop charter up (SIGTERM)"
kill -TERM "$up"; wait "$up" || true; up=""
$charter audit show --type hook-refused --config "$cfg"

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
section "done: one automated resolution, two handoffs, every call with a case, the wrong shape refused"
