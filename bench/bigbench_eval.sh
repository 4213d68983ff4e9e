#!/usr/bin/env bash
# Issue 26: ponder eval on three real BIG-bench task files (generative with output_regex; multiple choice without
# and with the options in the prompt), think and no-think, n = 100 each (BIG-bench's own draw: --split all --seed 42).
# Usage: BB=/path/to/bigbench/benchmark_tasks OUT=/tmp/bb_eval bash bench/bigbench_eval.sh [extra ponder eval flags]
# Full JSONs (every example) go to $OUT; bench/bigbench_crosscheck.py rescores them with BIG-bench's own code.
set -euo pipefail
BB=${BB:-/tmp/bb/bigbench-1.0.0/bigbench/benchmark_tasks}
OUT=${OUT:-/tmp/bb_eval}
PY=${PY:-python}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
for task in arithmetic/3_digit_addition logical_deduction/three_objects disambiguation_qa; do
  name=$(basename "$task")
  start=$(date +%s)
  $PY -m ponder.cli eval --model smollm2-135m --task "$BB/$task/task.json" --split all --seed 42 --n 100 \
    --max-thought-tokens 32 --max-answer-tokens 16 --batch-size 50 --quiet --json "$OUT/$name.json" "$@"
  echo "$task: $(( $(date +%s) - start )) s"
done
