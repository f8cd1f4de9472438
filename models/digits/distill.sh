#!/usr/bin/env bash
# Knowledge distillation on the digits (Hinton et al. 2015): a LeNet at about a quarter of its
# widths (lenet_student_train_test.prototxt) is trained alone, and again from the dense LeNet's
# logits softened at temperature T beside the hard labels (lenet_student_distill_train_test.prototxt,
# a KnowledgeDistillation loss; the teacher is frozen and filled by name from lenet_iter_2000.caffemodel).
# Both runs use the same solver and seed; the script repeats them for SEEDS (default "1 2 3") and
# prints the test accuracy of each, then the sizes. Leaves models/digits/lenet_student_scratch.caffemodel
# and lenet_student_distilled.caffemodel (the first seed's, student layers only).
set -euo pipefail
cd "$(dirname "$0")/../.."
D=models/digits
SEEDS=${SEEDS:-"1 2 3"}
[ -f $D/lenet_iter_2000.caffemodel ] || bash $D/train_lenet.sh
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# the same solver for both runs, with only the net, the seed and the snapshot place changed
solver() {   # solver NAME SEED
  sed -e "s#^random_seed: .*#random_seed: $2#" -e "s#^snapshot_prefix: .*#snapshot_prefix: \"$TMP/$1_$2\"#" \
    $D/lenet_student_$1_solver.prototxt > "$TMP/$1_$2_solver.prototxt"
  echo "$TMP/$1_$2_solver.prototxt"
}

for s in $SEEDS; do
  echo "seed $s: training the student alone, then distilled" >&2
  minicaffe train --solver="$(solver scratch "$s")" > "$TMP/scratch_$s.log" 2>&1
  minicaffe train --solver="$(solver distill "$s")" --weights=$D/lenet_iter_2000.caffemodel \
    > "$TMP/distill_$s.log" 2>&1
done

python - "$TMP" $SEEDS <<'EOF'
import os
import sys

import numpy as np

import minicaffe
from minicaffe import log

log.quiet = True
tmp, seeds = sys.argv[1], sys.argv[2:]
D = "models/digits"
STUDENT = f"{D}/lenet_student_train_test.prototxt"


def evaluate(prototxt, weights):
    net = minicaffe.Net(prototxt, weights, minicaffe.TEST)
    acc = 100 * float(net.forward()["accuracy"])       # one batch of 359 = the whole test split
    params = sum(b.data.size for name in net.params for b in net.params[name])
    return net, acc, params


_, teacher, teacher_params = evaluate(f"{D}/lenet_train_test.prototxt", f"{D}/lenet_iter_2000.caffemodel")
print(f"\n{'seed':>6} {'student alone':>14} {'distilled':>10} {'teacher':>8}")
rows = []
for i, s in enumerate(seeds):
    net_a, alone, params = evaluate(STUDENT, f"{tmp}/scratch_{s}_iter_2000.caffemodel")
    # the distilled snapshot also holds the teacher; loading it into the student net keeps the student
    net_d, distilled, _ = evaluate(STUDENT, f"{tmp}/distill_{s}_iter_2000.caffemodel")
    if i == 0:
        net_a.save(f"{D}/lenet_student_scratch.caffemodel")
        net_d.save(f"{D}/lenet_student_distilled.caffemodel")
    rows.append((alone, distilled))
    print(f"{s:>6} {alone:13.2f}% {distilled:9.2f}% {teacher:7.2f}%")
alone, distilled = np.mean(rows, axis=0)
print(f"{'mean':>6} {alone:13.2f}% {distilled:9.2f}% {teacher:7.2f}%")
kb = lambda p: os.path.getsize(p) / 1024
print(f"\nparameters: teacher {teacher_params:,} ({kb(f'{D}/lenet_iter_2000.caffemodel'):.0f} KB caffemodel), "
      f"student {params:,} ({kb(f'{D}/lenet_student_distilled.caffemodel'):.0f} KB), "
      f"{teacher_params / params:.1f}x fewer")
EOF
