#!/usr/bin/env bash
# Figures per language for the refund-triage example: component size, build
# time (sdk/build.sh or cargo, toolchains already installed), first load
# (compile, fresh cache), cached load (same cache, new process) and the cold
# step latency (fresh instance, one call: kv.get, llm.classify, log.write).
# Needs a built charter (cargo build -p charter-cli) and plugins/build.sh run once.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
charter="$root/target/debug/charter"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
printf "%-7s %11s %9s %12s %12s %10s\n" lang bytes build_ms first_load_ms cached_ms cold_step_us
for lang in rust python js c; do
  t=$(date +%s%N)
  if [[ $lang == rust ]]; then
    touch "$root/plugins/rust/refund-triage/src/lib.rs"
    (cd "$root/plugins" && CARGO_TARGET_DIR="$root/target" cargo build --release --target wasm32-wasip2 --quiet -p refund-triage)
    wasm="$root/target/wasm32-wasip2/release/refund_triage.wasm"
  else
    wasm="$work/$lang.wasm"
    bash "$root/sdk/build.sh" "$lang" "$root/plugins/$lang/refund-triage" "$wasm" 2>/dev/null
  fi
  build=$(ms "$t")
  d="$work/$lang-dep"; mkdir -p "$d"
  cat > "$d/charter.toml" <<TOML
[deployment]
name = "measure-$lang"
phase = 3
data_dir = "data"
[groups.all]
capabilities = ["charter:host/kv.get", "charter:host/llm.classify", "charter:host/log.write"]
[plugins.triage]
path = "$wasm"
groups = ["all"]
TOML
  t=$(date +%s%N); "$charter" check --config "$d/charter.toml" >/dev/null 2>&1; first=$(ms "$t")
  t=$(date +%s%N); "$charter" check --config "$d/charter.toml" >/dev/null 2>&1; cached=$(ms "$t")
  "$charter" kv set triage --config "$d/charter.toml" order:A-1 '{"amount_cents": 4200}' >/dev/null
  cold=$("$charter" call triage --config "$d/charter.toml" --json \
    --input '{"order_id":"A-1","request":"arrived broken"}' 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["duration_us"])')
  printf "%-7s %11s %9s %12s %12s %10s\n" "$lang" "$(stat -c %s "$wasm")" "$build" "$first" "$cached" "$cold"
done
echo "first_load_ms / cached_ms: wall time of \`charter check\` (process start, config, read, compile or cache hit, import check)" >&2
