#!/usr/bin/env bash
# Vendor the WASI 0.2 WIT that Charter's host implements into wit/deps/.
#
# The WIT is taken from the exact wasmtime-wasi and wasmtime-wasi-http crates
# pinned in Cargo.lock (fetched from crates.io by cargo), so the guest-side WIT
# can never drift from what the host links. Re-run after bumping wasmtime;
# `--check` fails if wit/deps/ differs from the pinned crates.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(awk '/^name = "wasmtime-wasi"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
cargo fetch --quiet
src=$(cargo metadata --format-version 1 --locked 2>/dev/null \
  | python3 -c 'import json,sys; m=json.load(sys.stdin); print([p["manifest_path"] for p in m["packages"] if p["name"]=="wasmtime-wasi-http"][0])')
src=$(dirname "$src")/wit/deps
out=wit/deps
if [[ "${1:-}" == "--check" ]]; then
  for f in "$src"/*.wit; do
    cmp -s "$f" "$out/$(basename "$f")" || { echo "wit/deps/$(basename "$f") differs from wasmtime-wasi-http $version; run wit/vendor-wasi.sh" >&2; exit 1; }
  done
  echo "wit/deps matches wasmtime-wasi $version"
  exit 0
fi
mkdir -p "$out"
cp "$src"/*.wit "$out"/
echo "# WASI 0.2 WIT vendored from wasmtime-wasi-http $version by wit/vendor-wasi.sh; do not edit." > "$out/PINNED"
echo "vendored $(ls "$out"/*.wit | wc -l) WIT files from wasmtime-wasi-http $version into $out"
