#!/usr/bin/env bash
# Structured pruning of the digits LeNet: prune whole filters by their L1 norm (Li et al. 2017;
# conv1 12 of 20, conv2 34 of 50, ip1 375 of 500), finetune with the filters held at zero, then thin:
# remove the zero filters and the inputs they fed, leaving a smaller plain dense net that any engine
# runs faster. Leaves models/digits/lenet_thin.prototxt (a train_test net reading the digits LMDBs)
# and models/digits/lenet_thin.caffemodel, and prints a table of the stages.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=models/digits
[ -f $D/lenet_iter_2000.caffemodel ] || bash $D/train_lenet.sh
# writes lenet_filter_pruned.caffemodel and the Cmp prototxt lenet_filter_pruned.prototxt
minicaffe prune --model=$D/lenet_train_test.prototxt --weights=$D/lenet_iter_2000.caffemodel \
  --granularity=filter --sparse-ratio=conv1=0.6,conv2=0.68,ip1=0.75 -o $D/lenet_filter_pruned.caffemodel
minicaffe train --solver=$D/lenet_structured_solver.prototxt --weights=$D/lenet_filter_pruned.caffemodel
echo
minicaffe thin --model=$D/lenet_filter_pruned.prototxt --weights=$D/lenet_structured_iter_1000.caffemodel \
  -o $D/lenet_thin
echo
python $D/report.py "dense" $D/lenet_iter_2000.caffemodel \
  --net $D/lenet_filter_pruned.prototxt "filters pruned" $D/lenet_filter_pruned.caffemodel \
  "pruned + finetuned" $D/lenet_structured_iter_1000.caffemodel \
  --net $D/lenet_thin.prototxt "thinned" $D/lenet_thin.caffemodel
echo
for m in lenet_train_test lenet_thin; do
  echo "minicaffe time, $m (batch 64): $(minicaffe time --model=$D/$m.prototxt --iterations=50 2>&1 |
    grep -o 'Average Forward pass: .*')"
done
