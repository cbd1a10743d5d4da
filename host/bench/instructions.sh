#!/usr/bin/env bash
# Instruction counts beside charter-bench's timings: repeatable figures on a
# shared machine whose wall-clock times swing 2x.
#
#   bash host/bench/instructions.sh          # needs valgrind; a few minutes
#   bash host/bench/instructions.sh --smoke  # each variant once, natively, no valgrind
#
# Each variant of `charter-bench` (CHARTER_BENCH_VARIANT, see
# host/bench/src/calls.rs) runs under `valgrind --tool=callgrind` twice, with
# N1 and N2 units (cold steps, guest->host calls, durable steps); the
# difference of the two whole-process counts over N2 - N1 is the cost of one
# unit, with every fixed cost (process start-up, host set-up, warm-up)
# cancelled out. Every thread's instructions count (the committer, tokio's
# workers), kernel time does not (an mmap or fdatasync costs the same few
# instructions however long it takes).
#
# Both sides of the cold-step ratio allocate instances on demand (valgrind
# cannot map the pooling allocator's reservation) and share one compile
# cache. valgrind's CPU has no SHA extensions, so the log's SHA-256 runs in
# software here (~55 instructions a byte with sha2's portable code; SHA-NI
# on the machines we run on): the script prints how much of the governed
# step that is.
#
# One count is left out of every run: sled's thread pool starts its
# workers with a spin lock (`sled::lazy::Lazy::deref`) that the starting
# thread holds while it spawns them. Natively that spin lasts microseconds,
# once per process; under valgrind, which runs one thread at a time, each
# spinning worker burns its whole time slice, and how many slices it gets
# varies from run to run: 5M to 360M instructions in the two workflow runs
# of one sitting, more than the whole difference being measured.
#
# The last line is `governed/raw cold step instructions: X.XX`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${CHARTER_BENCH_BIN:-./target/debug/charter-bench}
[ -x "$bin" ] || { echo "build first: cargo build --workspace --all-targets (the one build every command here shares)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/charter-instr.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CHARTER_BENCH_CACHE="$work/cache"
# One compiling thread: a parallel compile's spinning workers are noise.
export RAYON_NUM_THREADS=1

variants="raw-cold governed-cold raw-call log-call kv-call cedar-call durable-step workflow-step"

if [ "${1:-}" = "--smoke" ]; then
    # The drivers work (what tests/run.sh checks); no figures.
    for v in $variants; do
        CHARTER_BENCH_VARIANT=$v CHARTER_BENCH_N=3 "$bin" >/dev/null
    done
    echo "instructions.sh --smoke: every variant ran"
    exit 0
fi
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

# Whole-process instructions of one run of variant $1 with $2 units, less
# sled's start-up spin (above).
count() {
    local f="$work/cg.$1.$2"
    CHARTER_BENCH_VARIANT=$1 CHARTER_BENCH_N=$2 valgrind --tool=callgrind \
        --callgrind-out-file="$f" "$bin" >"$work/out.$1.$2" 2>"$work/err.$1.$2" || {
        echo "$1 (N=$2) failed:" >&2
        tail -20 "$work/err.$1.$2" >&2
        exit 1
    }
    local total spin
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
    spin=$(callgrind_annotate --inclusive=no --threshold=100 --auto=no "$f" 2>/dev/null |
        awk '/sled::lazy::Lazy<T,F> as core::ops::deref::Deref>::deref/ { gsub(",", "", $1); s += $1 } END { print s + 0 }')
    echo $((total - spin))
}

# Instructions per unit of variant $1 between N1=$2 and N2=$3.
per() {
    local a b
    a=$(count "$1" "$2")
    b=$(count "$1" "$3")
    if [ "$b" -le "$a" ]; then
        # The first run compiled after all (the component changed since
        # the cache was filled): count again, warm.
        a=$(count "$1" "$2")
        b=$(count "$1" "$3")
    fi
    echo $(((b - a) / ($3 - $2)))
}

# Fill the compile cache (valgrind's CPU features key its entries).
for v in raw-cold raw-call governed-cold kv-call; do
    CHARTER_BENCH_VARIANT=$v CHARTER_BENCH_N=1 valgrind --tool=none -q "$bin" >/dev/null 2>&1
done

# Instructions per unit of variant $1 (N1=$2, N2=$3, as `per` left its
# files) spent in SHA-256's block function: software here, SHA-NI natively.
sha_per() {
    local a b
    a=$(sha_in "$work/cg.$1.$2")
    b=$(sha_in "$work/cg.$1.$3")
    echo $(((b - a) / ($3 - $2)))
}
sha_in() {
    callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$1" 2>/dev/null |
        awk '$0 ~ /^ *[0-9,]+ \([^)]*\) +[^ ]*:sha2::sha256::compress256( |$)/ { gsub(",", "", $1); s += $1 } END { print s + 0 }'
}

raw_cold=$(per raw-cold 10 60)
gov_cold=$(per governed-cold 10 60)
gov_sha=$(sha_per governed-cold 10 60)
raw_call=$(per raw-call 1000 6000)
log_call=$(per log-call 1000 6000)
kv_call=$(per kv-call 500 3000)
cedar_call=$(per cedar-call 100 600)
durable=$(per durable-step 256 768)
workflow=$(per workflow-step 384 1152)

row() { printf '%-52s %10s instructions\n' "$1" "$2"; }
echo "charter-bench instruction counts (valgrind --tool=callgrind, difference of two runs)"
row "raw wasmtime cold step (fx-echo, 3 host calls)" "$raw_cold"
row "governed cold step (fx-echo, its 4 events appended)" "$gov_cold"
row "  of which SHA-256 in software (valgrind: no SHA-NI)" "$gov_sha"
row "raw guest->host call (log.write)" "$raw_call"
row "mediated guest->host call (log.write)" "$log_call"
row "audited call (kv.get, decided by grant)" "$kv_call"
row "audited call (kv.get, decided by a Cedar rule)" "$cedar_call"
row "durable audited step (128 in flight, fdatasync)" "$durable"
row "workflow step (3-step runs, 128 in flight)" "$workflow"
awk -v c="$cedar_call" -v k="$kv_call" 'BEGIN { printf "Cedar/grant kv.get instructions: %.2f\n", c / k }'
# Informational, never the figure: what the ratio would be if the chain's
# SHA-256 cost nothing (natively, with SHA-NI, it costs a few percent of
# its software count). The last line is the honest ratio.
awk -v g="$gov_cold" -v s="$gov_sha" -v r="$raw_cold" 'BEGIN { printf "governed/raw cold step instructions less software SHA-256: %.2f\n", (g - s) / r }'
awk -v g="$gov_cold" -v r="$raw_cold" 'BEGIN { printf "governed/raw cold step instructions: %.2f\n", g / r }'
