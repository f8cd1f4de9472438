#!/usr/bin/env bash
# Deep Compression's LeNet recipe on the digits: train dense, prune (conv1 34%, conv2 88%, ip1 92%,
# ip2 81%: the paper's LeNet-5 figures) and finetune, share weights (256 values in conv layers, 32
# in ip layers) and finetune.
# Leaves models/digits/lenet_compressed.caffemodel and prints a table of the stages.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=models/digits
[ -f $D/lenet_iter_2000.caffemodel ] || bash $D/train_lenet.sh
minicaffe train --solver=$D/lenet_pruned_solver.prototxt --weights=$D/lenet_iter_2000.caffemodel
minicaffe train --solver=$D/lenet_shared_solver.prototxt --weights=$D/lenet_pruned_iter_1000.caffemodel
cp $D/lenet_shared_iter_1000.caffemodel $D/lenet_compressed.caffemodel
minicaffe prune --model=$D/lenet_train_test.prototxt --weights=$D/lenet_iter_2000.caffemodel \
  --sparse-ratio=conv1=0.34,conv2=0.88,ip1=0.92,ip2=0.81 -o $D/lenet_pruned_no_finetune.caffemodel > /dev/null
echo
python $D/report.py "dense" $D/lenet_iter_2000.caffemodel \
  "pruned, no finetune" $D/lenet_pruned_no_finetune.caffemodel \
  "pruned + finetuned" $D/lenet_pruned_iter_1000.caffemodel \
  "shared + finetuned" $D/lenet_compressed.caffemodel
echo
minicaffe compress --model=$D/lenet_train_test.prototxt --weights=$D/lenet_compressed.caffemodel \
  -o $D/lenet_compressed.mcz
echo "caffemodel: $(stat -c %s $D/lenet_compressed.caffemodel) bytes, .mcz: $(stat -c %s $D/lenet_compressed.mcz) bytes"
