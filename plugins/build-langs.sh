#!/usr/bin/env bash
# Build the Python, JavaScript and C plugins (plugins/<lang>/<name>/) into
# target/plugins/<lang>/<name>.wasm with sdk/build.sh, installing the pinned
# toolchains on first use. A plugin whose sources, SDK and WIT are older than
# its component is not rebuilt.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
for lang in python js c; do
  for dir in "$root"/plugins/$lang/*/; do
    name=$(basename "$dir")
    out="$root/target/plugins/$lang/$name.wasm"
    if [[ -f "$out" ]] && [[ -z $(find "$dir" "$root/sdk/$lang" "$root/sdk/wit" "$root/sdk/build.sh" "$root/sdk/toolchains.sh" "$root/wit" -newer "$out" -type f -print -quit) ]]; then
      continue
    fi
    echo "==> building $lang/$name" >&2
    bash "$root/sdk/build.sh" "$lang" "$dir" "$out"
  done
done
ls -l "$root"/target/plugins/*/*.wasm | awk '{print $5, $9}' >&2
