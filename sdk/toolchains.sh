#!/usr/bin/env bash
# Install the pinned toolchains that build Charter plugins in Python,
# JavaScript and C, idempotently, under $CHARTER_TOOLCHAINS (default:
# <repo>/target/toolchains). A second run with nothing changed takes well
# under a second.
#
#   bash sdk/toolchains.sh python|js|c|all
#
# python: a venv with componentize-py and wasm-tools (sdk/python/requirements.txt)
# js:     componentize-qjs from sdk/js/package-lock.json (`npm ci`)
# c:      Debian's clang-14, lld-14, wasm32 compiler-rt and wasi-libc (apt),
#         wasm-tools (the python venv) and the WASI preview1 reactor adapter
#         of wasmtime 48 (crate wasi-preview1-component-adapter-provider)
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$sdk")"
tc="${CHARTER_TOOLCHAINS:-$root/target/toolchains}"
mkdir -p "$tc"
say() { echo "==> toolchains: $*" >&2; }

# Re-install when the pin file changes: the stamp holds its checksum.
fresh() { [[ -f "$1" ]] && [[ "$(cat "$1")" == "$2" ]]; }

python_tc() {
  local want; want="$(sha256sum "$sdk/python/requirements.txt" | cut -d' ' -f1)"
  fresh "$tc/python/.stamp" "$want" && return 0
  say "python venv with $(grep -v '^#' "$sdk/python/requirements.txt" | xargs) (once)"
  rm -rf "$tc/python"
  python3 -m venv "$tc/python"
  "$tc/python/bin/pip" install --quiet --disable-pip-version-check -r "$sdk/python/requirements.txt"
  echo "$want" > "$tc/python/.stamp"
}

js_tc() {
  local want; want="$(cat "$sdk/js/package.json" "$sdk/js/package-lock.json" | sha256sum | cut -d' ' -f1)"
  fresh "$tc/js/.stamp" "$want" && return 0
  command -v npm >/dev/null || { echo "toolchains: npm is missing; install Node.js 20+ (apt-get install nodejs npm)" >&2; exit 1; }
  say "componentize-qjs from sdk/js/package-lock.json (npm ci, once)"
  rm -rf "$tc/js" && mkdir -p "$tc/js"
  cp "$sdk/js/package.json" "$sdk/js/package-lock.json" "$tc/js/"
  (cd "$tc/js" && npm ci --silent --no-audit --no-fund)
  echo "$want" > "$tc/js/.stamp"
}

c_tc() {
  python_tc
  local pkgs=(clang-14 lld-14 libclang-rt-14-dev-wasm32 wasi-libc)
  local have
  have=$(dpkg-query -W -f='${Status}\n' "${pkgs[@]}" 2>/dev/null | grep -c "install ok installed" || true)
  if [[ "$have" -ne ${#pkgs[@]} ]]; then
    say "apt-get install ${pkgs[*]} (once)"
    if [[ $(id -u) -ne 0 ]]; then
      echo "toolchains: C needs ${pkgs[*]}: run as root, or: sudo apt-get install ${pkgs[*]}" >&2
      exit 1
    fi
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null 2>&1) || {
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
    }
  fi
  local adapter="$tc/c/wasi_snapshot_preview1.reactor.wasm"
  local want; want="$(sha256sum "$sdk/c/adapter/Cargo.lock" | cut -d' ' -f1)"
  if ! fresh "$tc/c/.stamp" "$want"; then
    say "WASI preview1 reactor adapter (crate pinned in sdk/c/adapter/Cargo.lock)"
    mkdir -p "$tc/c"
    local manifest
    manifest=$(cargo metadata --manifest-path "$sdk/c/adapter/Cargo.toml" --format-version 1 --locked 2>/dev/null \
      | python3 -c 'import json,sys; m=json.load(sys.stdin); print([p["manifest_path"] for p in m["packages"] if p["name"]=="wasi-preview1-component-adapter-provider"][0])')
    cp "$(dirname "$manifest")/artefacts/wasi_snapshot_preview1.reactor.wasm" "$adapter"
    echo "$want" > "$tc/c/.stamp"
  fi
}

case "${1:-all}" in
  python) python_tc ;;
  js) js_tc ;;
  c) c_tc ;;
  all) python_tc; js_tc; c_tc ;;
  *) echo "usage: sdk/toolchains.sh python|js|c|all" >&2; exit 2 ;;
esac
