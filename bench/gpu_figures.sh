#!/usr/bin/env bash
# The LTX-Video GPU figures issue 19 asks for, as one prepared script: each stage writes its JSON
# (offload: ltx_offload_copy.json) and table under RESULTS (default bench/results/gpu) and its log
# beside it; a stage that fails is reported and the next one runs. Stages (all by default, in this order):
#
#   offload    the text encoder's visit to the card: pageable round trip vs pinned (T5-XXL's 8.87 GiB)
#   seed       the seed request (704x1216x121, 50 steps): plain vs exact vs fast, each in its own process
#   distilled  the distilled recipe (0.9.5+ VAE, 8 fixed steps, no guidance) on random weights
#   capped     exact mode capped at 22 GiB (an L4's budget) with the text encoder waiting on the host
#   restart    first-request compile cost with an empty compile cache, then a restart on the warm cache
#
#   bash bench/gpu_figures.sh                 # everything (about 15 minutes on an H100: split it)
#   bash bench/gpu_figures.sh offload seed    # some stages
#   SMALL=1 bash bench/gpu_figures.sh         # tiny sizes: checks the script itself, on a CPU too
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-.venv/bin/python}
RESULTS=${RESULTS:-bench/results/gpu}
RUNS=${RUNS:-3}
mkdir -p "$RESULTS"

if [[ -n "${SMALL:-}" ]]; then
    SIZE=(--size tiny --height 64 --width 96 --frames 17 --steps 4)
    GIB=0.25
else
    SIZE=(--size full --height 704 --width 1216 --frames 121 --steps 50)
    GIB=8.87
fi
STAGES=("$@")
[[ ${#STAGES[@]} -gt 0 ]] || STAGES=(offload seed distilled capped restart)

bench() {  # bench NAME ARGS...: one run of bench.ltx, its table on stdout and in RESULTS/NAME.md
    local name=$1
    shift
    local started=$SECONDS
    if "$PYTHON" -m bench.ltx "$@" --out "$RESULTS/$name.json" >"$RESULTS/$name.md" 2>"$RESULTS/$name.log"; then
        echo "## $name ($((SECONDS - started)) s): python -m bench.ltx $*"
        cat "$RESULTS/$name.md"
    else
        echo "## $name FAILED after $((SECONDS - started)) s: python -m bench.ltx $*"
        tail -n 20 "$RESULTS/$name.log"
    fi
    echo
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
for stage in "${STAGES[@]}"; do
    case $stage in
        offload) bench offload --offload-copy "$GIB" --runs 5 ;;
        seed) bench seed "${SIZE[@]}" --runs "$RUNS" --variants plain,exact,fast ;;
        distilled) bench distilled "${SIZE[@]}" --runs "$RUNS" --recipe distilled --variants plain,exact,fast ;;
        capped) bench capped "${SIZE[@]}" --runs "$RUNS" --memory-cap-gib 22 --variants plain,exact ;;
        restart)
            # The same exact-mode load twice on one compile cache: the first compiles (empty cache),
            # the second is a restart that should find its kernels there. Compare load s and
            # first request +s of the two tables.
            cache=$(mktemp -d)
            TORCHINDUCTOR_CACHE_DIR=$cache bench restart-cold "${SIZE[@]}" --runs 2 --variants plain,exact
            TORCHINDUCTOR_CACHE_DIR=$cache bench restart-warm "${SIZE[@]}" --runs 2 --variants plain,exact
            rm -rf "$cache"
            ;;
        *) echo "unknown stage $stage (offload, seed, distilled, capped, restart)" >&2 && exit 2 ;;
    esac
done
