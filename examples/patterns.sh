#!/usr/bin/env bash
# The framework's five deployment patterns, one after another, each on its
# own deployment and data directory (each example's run.sh), then the
# framework's KPI table over all five: `charter kpi --framework` with one
# --config per deployment (columns per pattern, and overall), and the same
# table as an HTML page (`charter report`).
#
#   bash examples/patterns.sh
#
# CHARTER_BIN=path skips the build; PATTERNS_WORK=dir puts every example's
# work directory (rendered deployment, data, stand-ins' records) under dir
# (default target/charter-data/patterns).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
section() { printf '\n==> %s\n' "$1" >&2; shift; [[ $# -eq 0 ]] || printf '    %s\n' "$@" >&2; }

if [[ -z "${CHARTER_BIN:-}" ]]; then
  section "build: the charter binary and every example's plugins"
  cargo build -p charter-cli
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
  (cd plugins && CARGO_TARGET_DIR="$root/target" cargo build --release --target wasm32-wasip2 \
      -p ops-probe -p ops-restart -p ops-page -p refund-triage \
      -p service-desk -p service-desk-cases -p service-desk-sms \
      -p policy-assistant -p edr-connector -p soc-score -p soc-respond \
      -p payments-api -p fx-orders-tool)
  CHARTER_BIN="$root/target/debug/charter"
fi
export CHARTER_BIN
work="${PATTERNS_WORK:-$root/target/charter-data/patterns}"
rm -rf "$work"
mkdir -p "$work"
export IT_OPS_WORK="$work/it-ops" SERVICE_DESK_WORK="$work/service-desk" \
  SEC_OPS_WORK="$work/security-ops" REFUNDS_WORK="$work/refunds"

# Each example's own output goes to its log; a failure shows it.
run() {
  local name=$1 title=$2
  section "$title: bash examples/$name/run.sh  (output in $work/$name.log)"
  if ! bash "$root/examples/$name/run.sh" > "$work/$name.log" 2>&1; then
    tail -40 "$work/$name.log" >&2
    echo "patterns.sh: examples/$name/run.sh failed" >&2
    exit 1
  fi
  echo "ok" >&2
}
run it-ops "phase 1, IT-ops auto-remediation (deterministic)"
run service-desk "phase 2, voice service desk (supervised narrow interaction)"
run policy-assistant "phase 3, policy assistant (analysis only)"
run security-ops "phase 4, security operations (governed autonomy)"
run refunds "phase 5, refund management (AI proposes, human decides)"

configs=(--config "$IT_OPS_WORK/charter.toml" --config "$SERVICE_DESK_WORK/charter.toml"
  --config "$root/examples/policy-assistant/charter.toml"
  --config "$SEC_OPS_WORK/charter.toml" --config "$REFUNDS_WORK/charter.toml")
section "the framework's table over the five deployments: charter kpi --framework --config … (five times)"
"$CHARTER_BIN" kpi --framework "${configs[@]}"
"$CHARTER_BIN" kpi --framework --json "${configs[@]}" > "$work/framework.json"
"$CHARTER_BIN" report --out "$work/patterns.html" "${configs[@]}"
section "done: five patterns, each its phase's control enforced; the table as JSON in $work/framework.json, as a page in $work/patterns.html"
