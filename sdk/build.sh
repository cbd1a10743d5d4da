#!/usr/bin/env bash
# Build one Charter plugin written in Python, JavaScript or C into a component.
#
#   bash sdk/build.sh python|js|c PLUGIN_DIR OUT.wasm
#
# PLUGIN_DIR holds the source (python: app.py, js: step.js, c: step.c) and a
# `host-functions` file naming the host functions it calls (e.g.
# `log.write kv.get`; spaces, commas or newlines between names, `#` starts a
# comment): the component imports exactly those, so a deployment grants
# exactly those. The source is checked against it first (sdk/check-uses.py):
# a call it does not list is one line naming the function and the file.
# A failed build leaves no OUT.wasm behind (not even an older one), so
# `charter inspect` cannot show a stale component as the new one.
# Toolchains are installed on first use (sdk/toolchains.sh).
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$sdk")"
tc="${CHARTER_TOOLCHAINS:-$root/target/toolchains}"
[[ $# -eq 3 ]] || { echo "usage: sdk/build.sh python|js|c PLUGIN_DIR OUT.wasm" >&2; exit 64; }
lang="$1"; out="$3"
case "$lang" in
  python|js|c) ;;
  *) echo "sdk/build.sh: unknown language $lang (python, js, c; Rust plugins build with cargo)" >&2; exit 64 ;;
esac
[[ -d "$2" ]] || { echo "sdk/build.sh: $2 is not a directory (PLUGIN_DIR holds the plugin's source and host-functions)" >&2; exit 64; }
dir="$(cd "$2" && pwd)"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
work="$out.d"
# Whatever happens next, a failure leaves no component at OUT: the new one
# is written beside it and moved into place only once complete.
rm -f "$out"
trap 'rm -rf "$work"' EXIT
rm -rf "$work" && mkdir -p "$work"
uses="$(python3 "$sdk/check-uses.py" --list "$dir")"
[[ "$lang" == c ]] || python3 "$sdk/check-uses.py" "$lang" "$dir"
bash "$sdk/toolchains.sh" "$lang"
stdio=(); [[ "$lang" == js ]] && stdio=(--stdio)   # console.* writes to WASI stdout/stderr
python3 "$sdk/wit/guest-wit.py" --uses "$uses" --out "$work/wit" "${stdio[@]}"
world=charter:guest/step

case "$lang" in
  python)
    [[ -f "$dir/app.py" ]] || { echo "sdk/build.sh: $dir/app.py is missing" >&2; exit 1; }
    "$tc/python/bin/componentize-py" -d "$work/wit" -w "$world" componentize app \
      -p "$dir" -p "$sdk/python" -o "$work/out.wasm" >/dev/null
    ;;
  js)
    [[ -f "$dir/step.js" ]] || { echo "sdk/build.sh: $dir/step.js is missing" >&2; exit 1; }
    mkdir -p "$work/src"
    cp "$dir"/*.js "$work/src/"
    # charter.js imports WASI stdout/stderr at the version of the vendored WIT.
    wasi=$(sed -n 's/^package wasi:cli@\([0-9.]*\);/\1/p' "$root/wit/deps/cli.wit")
    sed "s#\(wasi:cli/std[a-z]*\)@[0-9.]*#\1@$wasi#" "$sdk/js/charter.js" > "$work/src/charter.js"
    # --sync: Charter's host runs without component-model async.
    "$tc/js/node_modules/.bin/componentize-qjs" --wit "$work/wit" --world "$world" \
      --js "$work/src/step.js" --sync -o "$work/out.wasm" >/dev/null
    ;;
  c)
    [[ -f "$dir/step.c" ]] || { echo "sdk/build.sh: $dir/step.c is missing" >&2; exit 1; }
    clang-14 --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -Wall -Wextra \
      -fuse-ld=lld -I "$sdk/c" "$dir/step.c" -o "$work/core.wasm"
    python3 "$sdk/check-uses.py" c "$dir" --core "$work/core.wasm"
    "$tc/python/bin/wasm-tools" component embed "$work/wit" --world "$world" "$work/core.wasm" -o "$work/embedded.wasm"
    "$tc/python/bin/wasm-tools" component new "$work/embedded.wasm" \
      --adapt "wasi_snapshot_preview1=$tc/c/wasi_snapshot_preview1.reactor.wasm" -o "$work/out.wasm"
    ;;
esac
mv "$work/out.wasm" "$out"
echo "built $out ($(stat -c %s "$out") bytes)" >&2
