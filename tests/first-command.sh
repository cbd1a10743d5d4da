#!/usr/bin/env bash
# README's first command, run as written, and its output read as a new user
# reads it: progress shows from the first seconds (a line per phase, cargo's
# own progress, never --quiet), and every section of the story is there with
# its key lines, while tracing stays quiet (no timestamped log lines, no
# warning that repeats a refusal the command itself reports).
#
# On a warm target/ this takes seconds; on a fresh clone it is the cold
# build (tests/run.sh runs it after the workspace build, so it is warm).
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=$(awk '/^```sh$/ {getline; print; exit}' README.md | sed 's/ *#.*$//')
[[ "$cmd" == "bash examples/demo.sh" ]] || { echo "first-command: README's first command is now '$cmd'; update this test" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
env -u CHARTER_LOG -u RUST_LOG $cmd >"$out" 2>&1 || { cat "$out"; echo "first-command: '$cmd' failed" >&2; exit 1; }

fail=0
# Each fragment must appear, in this order.
expect_in_order() {
  local line=0 n
  for want in "$@"; do
    n=$(tail -n +"$((line + 1))" "$out" | grep -nF -m1 -- "$want" | cut -d: -f1 || true)
    if [[ -z "$n" ]]; then
      echo "first-command: missing (after line $line): $want" >&2
      fail=1
      return
    fi
    line=$((line + n))
  done
}
expect_in_order \
  "==> [0s] build: the charter binary (cargo build -p charter-cli)" \
  "Finished \`dev\` profile" \
  "build: the demo's plugins" \
  "Finished \`release\` profile" \
  "charter check: the deployment is reviewed before anything runs" \
  "check passed: 3 plugins, 1 workflow" \
  "run 1: a 49.99 USD vase" \
  "payments: refunded 4999 cents on A-1001" \
  "[completed]  workflow refund-request" \
  "run 2: a 249 USD parcel" \
  "awaiting-approval, waiting for proposal P-" \
  "(exit code 4: waiting for people)" \
  "the proposal an approver reviews" \
  "policies   refunds/large-refunds-need-approval" \
  "separation of duties" \
  "may not approve it [separation-of-duties]" \
  "(exit code 2: refused by governance)" \
  "bob approves" \
  "resumed: now completed" \
  "approved by bob (\"carrier confirmed loss\")" \
  "a 10,000 USD refund is denied" \
  "denied: no policy permits this call" \
  "(exit code 2: refused by governance)" \
  "an overreaching deployment is refused" \
  "permits no writes" \
  "is not granted" \
  "check refused: governance violations above" \
  "the audit trail of the proposal" \
  "propose acme:payments/refunds@0.1.0#issue-refund" \
  "REFUSED attempt to approve" \
  "decision approve" \
  "executed acme:payments/refunds@0.1.0#issue-refund" \
  "chain intact" \
  "unauthorized actions executed   0   (target 0)" \
  "call denied" \
  "approval attempt refused" \
  "done: the governed workflow"

if grep -nE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z? +(TRACE|DEBUG|INFO|WARN|ERROR)|^ *(INFO|DEBUG|TRACE) ' "$out"; then
  echo "first-command: tracing lines above interleave with the story (tracing is quiet unless CHARTER_LOG/RUST_LOG asks)" >&2
  fail=1
fi
if grep -nE '^warning: (capability call denied|approval attempt refused|refused at load)' "$out"; then
  echo "first-command: a warning repeats a refusal the command itself reports" >&2
  fail=1
fi
sections=$(grep -c '^==> \[' "$out")
[[ $sections -ge 15 ]] || { echo "first-command: $sections sections, expected at least 15" >&2; fail=1; }
if [[ $fail -ne 0 ]]; then
  echo "---- output of '$cmd':" >&2
  cat "$out" >&2
  exit 1
fi
echo "first-command: '$cmd' told the whole story ($sections sections, $(wc -l <"$out") lines)" >&2
