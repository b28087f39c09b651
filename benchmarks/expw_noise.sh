#!/usr/bin/env bash
# Issue 45: ExpW's noisy labels, four ways, each a 4-epoch continuation of the embedded default
# (its package rebuilt as a checkpoint by from_package and used as the mirrored teacher), then
# scored on every validation part:
#
#   bash benchmarks/expw_noise.sh        # about 10 min a run on two AVX2 cores
#
# expw_base never draws an ExpW face (--domain-scale expw=0 keeps its rows, so all four share one
# teacher cache); expw_plain draws ExpW as stored; expw_filtered never draws the faces under the
# meta.csv bars; expw_down draws them 0.3 times as often as the clean faces of their class;
# expw_labels draws ExpW as stored but learns it from its labels alone (--domain-teacher expw=none);
# expw_specialist draws nothing but ExpW, from its labels alone, 6 short epochs: how far the pico's
# capacity can follow ExpW's own labelling (not a candidate: it is meant to forget the other domains);
# expw_specialist_resnet the same from the long teacher run's resnet_s (issue 41): what capacity adds.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
[ -f runs/default.pt ] || python -m motivnet_distill.students.from_package motivnet_edge/models/default --out runs/default.pt \
    --faces ../shared/data/ferplus/FER2013Valid
common="--domains ../shared --init runs/default.pt --cache-dir runs/cache_kd --student vit_hybrid_pico
        --teacher motivnet_edge/models/default/model.onnx --mirror-teacher --degrade 0.5 --views 4 --epochs 4
        --samples-per-epoch 24000 --lr 3e-4 --threads 2 --resume"
bars="--meta-min expw.detector_confidence=30 --meta-min expw.box_side_px=64"
declare -A variant=(
    [base]="--domain-scale expw=0"
    [plain]=""
    [filtered]="$bars --meta-weight 0"
    [down]="$bars --meta-weight 0.3"
    [labels]="--domain-teacher expw=none"   # ExpW rows learn from their labels alone (no KD term)
    [specialist]="--without ferplus --without facial_expressions --without kdef --without affectnet96
                  --without sfew --domain-teacher expw=none --epochs 6 --samples-per-epoch 8000"
    [specialist_resnet]="--without ferplus --without facial_expressions --without kdef --without affectnet96
                  --without sfew --domain-teacher expw=none --epochs 6 --samples-per-epoch 8000
                  --student resnet_s --init runs/teacher_resnet48/best.pt"
)
runs=(--run ../motivnet_edge/models/default)
for name in ${VARIANTS:-base plain filtered down labels specialist specialist_resnet}; do      # e.g. VARIANTS="base plain"
    motivnet-edge distill $common --out "runs/expw_$name" ${variant[$name]}
    runs+=(--run "../runs/expw_$name")
done
cd benchmarks && python select_default.py "${runs[@]}" --out results/expw_noise.json
