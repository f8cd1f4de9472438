#!/usr/bin/env bash
# Low-rank factorization of the digits LeNet: ip1 (800 -> 500) becomes ip1_v (800 -> 32, no bias)
# then ip1_u (32 -> 500, the bias), weights from the truncated SVD; then finetune at half the
# dense rate for 300 iterations. Leaves models/digits/lenet_lowrank.prototxt (a train_test net
# reading the digits LMDBs), lenet_lowrank.caffemodel (factorized, before finetuning) and
# lenet_lowrank_iter_300.caffemodel, and prints parameters, FLOPs and accuracy of each stage.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=models/digits
[ -f $D/lenet_iter_2000.caffemodel ] || bash $D/train_lenet.sh
minicaffe lowrank --model=$D/lenet_train_test.prototxt --weights=$D/lenet_iter_2000.caffemodel \
  --rank=ip1=32 -o $D/lenet_lowrank
echo
minicaffe train --solver=$D/lenet_lowrank_solver.prototxt --weights=$D/lenet_lowrank.caffemodel 2>&1 |
  grep -E "Iteration [0-9]+, (loss|Testing)|Test net output #0" || true
echo
python $D/report.py "dense" $D/lenet_iter_2000.caffemodel \
  --net $D/lenet_lowrank.prototxt "ip1 rank 32" $D/lenet_lowrank.caffemodel \
  "ip1 rank 32 + finetuned" $D/lenet_lowrank_iter_300.caffemodel
