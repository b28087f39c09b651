#!/usr/bin/env bash
# Issue 41, step 3: an `accurate` candidate made of the embedded default and a teacher run, as one graph.
#
# The default (its package rebuilt as a checkpoint by from_package) and the teacher run's best
# student become one ensemble run folder (python -m motivnet_distill.students.ensemble: the mean of
# their probabilities, one prior correction refitted on the validation parts); make_default.py
# exports it as the `accurate` package would be embedded, lean (export --lean: OpenVINO reads
# model.onnx, one INT8 file for every runtime), into runs/pkg/NAME, never into the wheel; then
# the scoreboard scores it on the test parts (its row kept beside the others) and full 640x480
# frames time it on this CPU (benchmarks/results/[avx2/]frame_pipeline_NAME.json). Whether it is
# embedded is decided from those files, by hand, against the issue's targets.
#
#   bash benchmarks/accurate_candidate.sh runs/teacher_resnet48 ensemble_default_teacher   # ~25 min, two AVX2 cores
#       (the row and frame file committed on 2026-12-06, made step by step as runs/accurate_ens)
#   bash benchmarks/accurate_candidate.sh runs/teacher_resnet_s1 ensemble_default_s1
#   bash benchmarks/accurate_candidate.sh --mirror runs/teacher_resnet48 ensemble_default_teacher_mirror
#       (--mirror: the graph reads each face's mirror image too, twice the compute: ensemble --mirror)
#
# Pause any training while it runs (pkill -STOP -f "out runs/..."): the frame timing is a latency.
set -euo pipefail
cd "$(dirname "$0")/.."
MIRROR=()
[ "${1:-}" != --mirror ] || { MIRROR=(--mirror); shift; }
RUN=${1:?usage: bash benchmarks/accurate_candidate.sh [--mirror] TEACHER_RUN [NAME]}
NAME=${2:-ensemble_default_$(basename "$RUN")}
[ -f "$RUN/best.pt" ] || { echo "no run at $RUN (a distill run folder with best.pt)" >&2; exit 2; }
[ ! -e "runs/$NAME" ] || { echo "runs/$NAME exists: choose another NAME or remove it" >&2; exit 2; }
mkdir -p runs/pkg
[ -f runs/default.pt ] || python -m motivnet_distill.students.from_package motivnet_edge/models/default --out runs/default.pt \
    --faces ../shared/data/ferplus/FER2013Valid
python -m motivnet_distill.students.ensemble --run runs/default.pt --run "$RUN" --out "runs/$NAME" "${MIRROR[@]}"
python benchmarks/make_default.py --run "runs/$NAME" --name accurate --lean --out "runs/pkg/$NAME" \
    --command "$(cat "runs/$NAME/commands.txt") (runs/default.pt: python -m motivnet_distill.students.from_package motivnet_edge/models/default; $RUN: its commands.txt)"
python benchmarks/domains.py --model "$NAME=runs/pkg/$NAME" --no-peers --keep --plots ''
frames=$(python -c "import sys; sys.path.insert(0, 'benchmarks'); from common import per_cpu_result; print(per_cpu_result('frame_pipeline_$NAME.json'))")
python benchmarks/frame_pipeline.py --package "runs/pkg/$NAME" --out "$frames"
