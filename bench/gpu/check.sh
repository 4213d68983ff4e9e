#!/usr/bin/env bash
# Every GPU check of ponder in one call of at most 8 minutes; results under OUT_DIR (default: $OUT, else
# runs/gpu-check): summary.json (everything, machine-readable) and check.log (the whole output). Only
# these two files are written there: the device machine returns at most 8 files.
#
#   bash bench/gpu/fetch_wheels.sh                          # here, once: the wheels the GPU image lacks -> .whl/
#   PONDER_COMMIT=<sha> bash bench/gpu/check.sh [OUT_DIR]    # on the GPU machine (carry .whl)
#   bash bench/gpu/check.sh --dry-run [OUT_DIR]              # the same plumbing on a CPU in seconds (CI runs it)
#
# Stages, each under a time limit and all within one deadline (a failed or timed-out stage is recorded and
# the next one runs):
#   1. wheels      install .whl/*.whl (bench/gpu/wheels.txt) into a --target folder put on PYTHONPATH
#   2. pytest      pytest -m cuda tests/test_cuda.py (dry run: --collect-only, the list of checks)
#   3. bench:*     bench/rlp_throughput.py --device cuda --dtype bf16 --only ponder,train,sft on tiny,
#                  smollm2-135m-shape and qwen3-0.6b-shape (dry run: tiny on the CPU, fp32, one small step)
#   4. memory      bench/memory.py --device cuda --dtype bf16 --json, when that script exists
#   5. fsdp-gloo   the 2-rank FSDP2 equality and resume tests (tests/test_distributed.py, test_sharding.py) with
#                  the GPU hidden: one GPU cannot hold two NCCL ranks, so they run on gloo as in CI (the FSDP2
#                  step on CUDA itself is test_sharded_run_step_matches_the_unsharded_model in stage 2). CPU
#                  only, so it starts first and runs beside stages 2-4 on the machine's idle cores (on the H200
#                  machine it needed more than the 90 s it had when it ran last, after the others)
#   6. summary     bench/gpu/summarize.py: summary.json, the report and the targets met or not
set -u -o pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DRY=0
OUT_DIR=""
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
        *) OUT_DIR=$arg ;;
    esac
done
OUT_DIR=${OUT_DIR:-${OUT:-runs/gpu-check}}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ponder-gpu-check.XXXXXX")
SITE=$WORK/site
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
exec > >(tee "$OUT_DIR/check.log") 2>&1
TEE_PID=$!

START=$(date +%s)
DEADLINE=$((START + ${PONDER_CHECK_SECONDS:-465}))  # 8 minutes, less the summary and the call's own start

stage() {  # stage NAME LIMIT_S COMMAND...: run under min(LIMIT, time left), record "NAME EXIT SECONDS"
    local name=$1 limit=$2 left t0 rc
    shift 2
    left=$((DEADLINE - $(date +%s)))
    ((limit > left)) && limit=$left
    if ((limit < 5)); then
        echo "== $name: skipped, no time left"
        echo "$name 124 0" >>"$WORK/stages.txt"
        return
    fi
    echo "== $name (limit ${limit}s): $*"
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    echo "$name $rc $(($(date +%s) - t0))" >>"$WORK/stages.txt"
    echo "== $name: exit $rc after $(($(date +%s) - t0))s"
}

WHEELS=$(grep -v '^\s*#' bench/gpu/wheels.txt | grep -v '^\s*$')
echo "ponder GPU check$( ((DRY)) && echo ' (dry run on CPU)'), results in $OUT_DIR"
echo "wheels to install (bench/gpu/wheels.txt):"
for w in $WHEELS; do
    name=${w%%==*}
    file=$(ls .whl/"${name//-/_}"-* 2>/dev/null | head -1)
    echo "  $w  ${file:-(missing: run bench/gpu/fetch_wheels.sh here first)}"
done

MODELS="tiny smollm2-135m-shape qwen3-0.6b-shape"
GPU_BENCH="--device cuda --dtype bf16 --only ponder,train,sft --docs 8 --positions 4 --steps 3 --warmup 1"
FSDP_TESTS=(tests/test_distributed.py tests/test_sharding.py -k "fsdp or killed or sharded or optimizer_saved")
if ((DRY)); then
    echo "checks the GPU run makes (pytest -m cuda):"
    stage pytest-collect 60 "$PY" -m pytest -m cuda tests/test_cuda.py --collect-only -q -p no:cacheprovider
    echo "benches the GPU run makes:"
    for m in $MODELS; do echo "  $PY bench/rlp_throughput.py --model $m $GPU_BENCH"; done
    [ -f bench/memory.py ] && echo "  $PY bench/memory.py --device cuda --dtype bf16 --json memory.json"
    echo "  CUDA_VISIBLE_DEVICES= $PY -m pytest ${FSDP_TESTS[*]}"
    stage bench:tiny 120 "$PY" bench/rlp_throughput.py --model tiny --device cpu --dtype fp32 --only ponder,train,sft \
        --prefix 32 --thought 4 --group 2 --docs 2 --positions 2 --steps 1 --warmup 0 --peak-n 256 \
        --json "$WORK/rlp_tiny.json"
else
    if ls .whl/*.whl >/dev/null 2>&1; then
        stage wheels 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/*.whl
        export PYTHONPATH="$PYTHONPATH:$SITE"  # ahead of the image's site-packages, as PYTHONPATH always is
    else
        echo "== wheels: .whl/ is empty; relying on the image's packages"
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    # CPU-only: beside the GPU stages, its output kept apart and appended to the log at the end.
    stage fsdp-gloo 300 env CUDA_VISIBLE_DEVICES= OMP_NUM_THREADS=1 "$PY" -m pytest "${FSDP_TESTS[@]}" -q -rA \
        -p no:cacheprovider >"$WORK/fsdp-gloo.log" 2>&1 &
    FSDP_PID=$!
    stage pytest 180 "$PY" -m pytest -m cuda tests/test_cuda.py -q -rA -p no:cacheprovider --junitxml="$WORK/pytest.xml"
    declare -A LIMIT=([tiny]=45 [smollm2-135m-shape]=75 [qwen3-0.6b-shape]=110)
    for m in $MODELS; do
        # shellcheck disable=SC2086
        stage "bench:$m" "${LIMIT[$m]}" "$PY" bench/rlp_throughput.py --model "$m" $GPU_BENCH --json "$WORK/rlp_$m.json"
    done
    if [ -f bench/memory.py ]; then
        stage memory 90 "$PY" bench/memory.py --device cuda --dtype bf16 --json "$WORK/memory.json"
    fi
    wait "$FSDP_PID"
    cat "$WORK/fsdp-gloo.log"
fi
DEADLINE=$((DEADLINE + 15))  # the summary always gets its time
stage summary 15 "$PY" bench/gpu/summarize.py "$WORK" "$OUT_DIR/summary.json" $( ((DRY)) && echo --dry-run)
echo "total $(($(date +%s) - START))s; summary: $OUT_DIR/summary.json, log: $OUT_DIR/check.log"
rm -rf "$WORK"
exec 1>&- 2>&-
wait "$TEE_PID"  # the log is complete before the call returns
