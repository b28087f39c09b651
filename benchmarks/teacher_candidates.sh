#!/usr/bin/env bash
# Issue 41, step 1: which teacher learns most per CPU-hour on these 2 cores.
#
# Every candidate trains with the same data and recipe (all domains, the default as a mirrored
# KD teacher at weight 0.5, half the faces degraded, 4 cached views, 24k faces an epoch) on the
# first epochs of the same 40-epoch schedule, each for a bounded sitting (--stop-after), nice'd.
# The winner is simply resumed (same command, no --stop-after) as the long teacher run.
# Scored on validation parts only; benchmarks/report_teacher_candidates.py draws the table and
# the curve against CPU-minutes (log.jsonl's cpu_seconds: all threads' CPU time of the run).
#
#   bash benchmarks/teacher_candidates.sh                      # every candidate
#   CANDIDATES="resnet64:resnet_s64:5" bash benchmarks/teacher_candidates.sh
set -euo pipefail
SHARED=${SHARED:-../shared}
RUNS=${RUNS:-runs}
CANDIDATES=${CANDIDATES:-"resnet48:resnet_s:6 resnet64:resnet_s64:5 nano:vit_hybrid_nano:4"}

for spec in $CANDIDATES; do
    IFS=: read -r name student sitting <<<"$spec"
    nice -n 10 motivnet-edge distill --domains "$SHARED" --out "$RUNS/teacher_$name" --cache-dir "$RUNS/cache_kd" \
        --student "$student" --teacher motivnet_edge/models/default/model.onnx --mirror-teacher --degrade 0.5 \
        --views 4 --kd-weight 0.5 --epochs 40 --samples-per-epoch 24000 --lr 1e-3 --threads 2 \
        --resume --stop-after "$sitting" >>"$RUNS/teacher_$name.log" 2>&1
done
