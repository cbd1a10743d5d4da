#!/usr/bin/env bash
# The policy assistant, phase 3 ("analysis only"), end to end on the embedded
# defaults: the host indexes corpus/ (BM25) when it starts, the step answers
# staff questions from the passages charter:host/knowledge finds and cites
# each one it used; then a second configuration that also grants a write is
# refused at load.
#
# CHARTER_BIN=path skips the build (the test suite passes its own binary and
# builds the plugin itself).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
section() {
  printf '\n==> %s\n' "$1" >&2
  shift
  [[ $# -eq 0 ]] || printf '    %s\n' "$@" >&2
}
# Run a command that must exit with CODE.
expect() {
  local want=$1 meaning=$2
  shift 2
  local code=0
  "$@" || code=$?
  echo "(exit code $code: $meaning)" >&2
  [[ $code -eq $want ]] || { echo "run.sh: expected exit code $want" >&2; exit 1; }
}

if [[ -z "${CHARTER_BIN:-}" ]]; then
  section "build: the charter binary and the policy-assistant plugin"
  cargo build -p charter-cli
  rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
  (cd plugins && CARGO_TARGET_DIR="$root/target" cargo build --release --target wasm32-wasip2 -p policy-assistant)
fi
charter="${CHARTER_BIN:-./target/debug/charter}"
cfg=examples/policy-assistant/charter.toml
rm -rf target/charter-data/policy-assistant

section "charter check: phase 3, one read-only group searching the 'policies' corpus" \
  "corpus/ holds $(find "$here/corpus" -name '*.md' | wc -l) Markdown policy documents; the host indexes them when it starts."
$charter check --config "$cfg"

ask() {
  section "question: $1"
  $charter call policy-assistant --config "$cfg" --input "$(python3 -c 'import json,sys; print(json.dumps({"question": sys.argv[1]}))' "$1")"
}
ask "How much can I spend on a hotel per night in Paris?"
ask "How many weeks of parental leave do I get?"
ask "Do I need three quotes for a 20,000 EUR purchase?"
ask "What should I do if I clicked a phishing link?"
ask "Can I bring my dog to the office?"

section "every search is in the audit trail: the query, the corpus, the decision" \
  "A read is recorded like any host call; nothing was written."
$charter audit show --plugin policy-assistant --type call --config "$cfg" | tail -n 5

section "phase 3 refuses writes: overreach.toml also grants kv.set (an answer cache)" \
  "An analysis-only deployment cannot grant a write group: refused at load, before any plugin runs (exit 2)."
expect 2 "refused by governance" $charter check --config examples/policy-assistant/overreach.toml
expect 2 "refused by governance" $charter call policy-assistant --config examples/policy-assistant/overreach.toml \
  --input '{"question":"How many days of annual leave do I have?"}'
section "done: grounded, cited answers; no write grantable in this deployment"
