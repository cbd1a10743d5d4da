#!/usr/bin/env bash
# Build every guest plugin and fixture from source into target/wasm32-wasip2/release/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
echo "==> building Rust plugins (wasm32-wasip2)" >&2
(cd "$root/plugins" && CARGO_TARGET_DIR="$root/target" cargo build --release --target wasm32-wasip2 --quiet)
ls "$root/target/wasm32-wasip2/release/"*.wasm >&2
bash "$root/plugins/build-langs.sh"
