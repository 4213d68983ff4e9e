#!/usr/bin/env bash
# Download, here, the wheels bench/gpu/wheels.txt names into .whl/ (git-ignored) for the GPU image:
# CPython 3.12, manylinux x86_64, binary wheels only, no dependencies resolved (the list is complete).
# Then carry .whl with the device call: bench/gpu/check.sh installs them with --no-index.
#
#   bash bench/gpu/fetch_wheels.sh            # prints each wheel and its size, and the total
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
mkdir -p .whl
grep -v '^\s*#' bench/gpu/wheels.txt | grep -v '^\s*$' | xargs "$PY" -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl
ls -l .whl/*.whl | awk '{printf "%8.1f KiB  %s\n", $5 / 1024, $9; total += $5} END {printf "%8.1f MiB  total\n", total / 1048576}'
