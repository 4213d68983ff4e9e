#!/usr/bin/env bash
# RLP data-parallel over two processes (gloo on CPU, NCCL on GPUs): the same final weights as one process.
#   bash examples/torchrun_rlp.sh [more ponder rlp flags]
# Train or cache the model first (`ponder base`), so the two ranks do not each train the tiny base.
set -euo pipefail
exec torchrun --standalone --nproc_per_node 2 -m ponder.cli rlp --config "$(dirname "$0")/rlp_tiny.yaml" \
    --out runs/rlp-ddp "$@"
