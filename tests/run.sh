#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
# toolchain target, vendored WIT check, guest fixtures built from source,
# formatting and lints, the browser for the console's tests, every test
# (README's plugin sections run as written among them), README's first
# command with its output checked, and a short benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { echo "==> [$((SECONDS - start))s] $*" >&2; }

# Clippy lints our crates as the one build compiles them: `cargo clippy` is
# `cargo check` under clippy-driver, a second, check-mode compile of the whole
# dependency graph (minutes on 2 cores in a fresh clone). As the workspace's
# rustc wrapper, clippy-driver runs the same lints with the same -D warnings
# inside `cargo build`; dependencies are built once and not linted, as with
# `cargo clippy`. Every cargo command below shares it, so nothing is built
# twice (a plain `cargo test` afterwards rebuilds only our crates, once).
export RUSTC_WORKSPACE_WRAPPER
RUSTC_WORKSPACE_WRAPPER="$(rustc --print sysroot)/bin/clippy-driver"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

step "wasm32-wasip2 target"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
step "vendored WASI WIT matches the pinned wasmtime"
bash wit/vendor-wasi.sh --check
step "plugin toolchains for Python, JavaScript and C (pinned; installed once under target/toolchains)"
bash sdk/toolchains.sh all
step "guest plugins and fixtures (Rust, Python, JavaScript, C)"
bash plugins/build.sh
step "cargo fmt --check"
cargo fmt --all --check
step "cargo build (host workspace, every target), linted by clippy -D warnings as it compiles"
cargo build --workspace --all-targets
step "README's first command builds nothing the workspace build did not"
# Feature unification differs between `-p charter-cli` and the workspace; if a
# dependency resolves differently, the first command below would recompile
# wasmtime and Cedar (~10 min on 2 cores). host/cli/Cargo.toml's workspace
# hack keeps them equal; this says which crate drifted.
stale=$(cargo build -p charter-cli --message-format=json \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and not m["fresh"]:
        print(m["package_id"], m["features"])')
if [[ -n "$stale" ]]; then
    echo "run.sh: cargo build -p charter-cli rebuilt what the workspace build had built; add the features below to host/cli/Cargo.toml's workspace hack:" >&2
    echo "$stale" >&2
    exit 1
fi
step "Debian's Chromium and chromedriver for the console's browser tests (installed when missing)"
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y chromium chromium-driver \
        || { $sudo apt-get update && $sudo apt-get install -y chromium chromium-driver; }
fi
# The browser tests fail rather than skip here (tests/all/console.rs).
export CHARTER_REQUIRE_BROWSER=1
step "the official MCP client (Python SDK, pinned in tests/mcp/requirements.txt) in target/mcp-venv"
if ! cmp -s tests/mcp/requirements.txt target/mcp-venv/requirements.installed; then
    python3 -m venv target/mcp-venv
    target/mcp-venv/bin/python -m pip install --quiet -r tests/mcp/requirements.txt
    cp tests/mcp/requirements.txt target/mcp-venv/requirements.installed
fi
# The MCP tests fail rather than skip here (tests/all/mcp.rs).
export CHARTER_REQUIRE_MCP=1
step "PostgreSQL 15's server binaries for the PostgreSQL backend's tests (installed when missing)"
# Each test starts a throwaway cluster of its own (initdb + pg_ctl in a
# temporary directory, Unix socket only; host/pg/src/cluster.rs).
if ! [ -x /usr/lib/postgresql/15/bin/initdb ] && ! command -v initdb >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y postgresql-15 \
        || { $sudo apt-get update && $sudo apt-get install -y postgresql-15; }
fi
# The PostgreSQL tests fail rather than skip here (host/pg/tests/log.rs).
export CHARTER_REQUIRE_PG=1
step "cargo test"
cargo test --workspace
step "README's first command (bash examples/demo.sh), its output read as a new user reads it"
bash tests/first-command.sh
step "benchmark smoke run (figures are indicative at this iteration count)"
# Run the binary the workspace build made: `cargo run -p` would re-resolve
# features for one package and rebuild half the dependency graph.
CHARTER_BENCH_ITERS=300 ./target/debug/charter-bench
step "instruction-count drivers (host/bench/instructions.sh --smoke: each variant once, no valgrind)"
bash host/bench/instructions.sh --smoke
step "all done"
