#!/usr/bin/env bash
# 8-bit quantization of the digits LeNet (minicaffe quantize): int8 weights per output channel,
# activation scales from 10 TRAIN batches, stored in .mcz; `minicaffe test` on the .mcz runs the
# integer forward. Quantizes the dense model, and the pruned one when prune_finetune.sh has made it;
# prints test accuracy and forward time at batch 64 of each, float and int8, and the file sizes.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=models/digits
NET=$D/lenet_train_test.prototxt
[ -f $D/lenet_iter_2000.caffemodel ] || bash $D/train_lenet.sh
minicaffe quantize --model=$NET --weights=$D/lenet_iter_2000.caffemodel -o $D/lenet_int8.mcz
stages=("dense float32" $D/lenet_iter_2000.caffemodel "dense int8" $D/lenet_int8.mcz)
files=($D/lenet_iter_2000.caffemodel $D/lenet_int8.mcz)
if [ -f $D/lenet_pruned_iter_1000.caffemodel ]; then
  minicaffe quantize --model=$NET --weights=$D/lenet_pruned_iter_1000.caffemodel -o $D/lenet_pruned_int8.mcz
  minicaffe compress --model=$NET --weights=$D/lenet_pruned_iter_1000.caffemodel -o $D/lenet_pruned.mcz > /dev/null
  stages+=("pruned float32" $D/lenet_pruned_iter_1000.caffemodel "pruned int8" $D/lenet_pruned_int8.mcz)
  files+=($D/lenet_pruned.mcz $D/lenet_pruned_int8.mcz)
fi
echo
python $D/report.py "${stages[@]}" 2> /dev/null
echo
for f in "${files[@]}"; do
  printf "%-40s %9d bytes\n" "$f" "$(stat -c %s "$f")"
done
