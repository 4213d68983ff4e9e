#!/bin/bash
# usage: rss.sh NAME extra-args...
name=$1; shift
cd /work/wt/mem
export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1
rm -rf /tmp/memwork/run-$name
/usr/bin/time -v nice -n 10 /work/main/.venv/bin/python -m ponder.cli rlp --model smollm2-135m --group-size 4 --max-thought-tokens 32 --context-length 128 --docs-per-step 4 --corpus /tmp/memwork/corpus/train.jsonl --steps 1 --report-to none --out /tmp/memwork/run-$name "$@" > /tmp/memwork/log-$name.txt 2>&1
grep -E "Maximum resident|Elapsed" /tmp/memwork/log-$name.txt
