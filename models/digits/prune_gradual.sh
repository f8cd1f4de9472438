#!/usr/bin/env bash
# Gradual pruning (AGP, Zhu & Gupta 2017) of the digits LeNet: from the trained dense net, the
# sparsity of conv1/conv2/ip1/ip2 rises on a cubic from 0 to 40/90/96/85% over 1,200 iterations
# (masks remade every 100), 800 more iterations recover at those ratios, then the weights are shared
# by k-means and finetuned (500 iterations) and the result stored as a .mcz.
# Leaves models/digits/lenet_gradual.caffemodel with its Cmp prototxt (lenet_gradual.prototxt, which
# keeps the zeros and shared values when finetuned) and lenet_gradual.mcz; prints a table of stages.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=models/digits

logged() {   # run a command with its log in a file; show the log's end if it fails
  local log=$1; shift
  "$@" > "$log" 2>&1 || { tail -n 20 "$log"; echo "failed: $* (log: $log)"; exit 1; }
}

if [ ! -f $D/lenet_iter_2000.caffemodel ]; then
  echo "training the dense LeNet (log: $D/lenet_dense.log)"
  logged $D/lenet_dense.log bash $D/train_lenet.sh
fi
echo "AGP pruning (log: $D/lenet_agp.log)"
logged $D/lenet_agp.log minicaffe train --solver=$D/lenet_agp_solver.prototxt \
  --weights=$D/lenet_iter_2000.caffemodel
grep -E "Testing net|Test net output #0" $D/lenet_agp.log | sed -E 's/.*\] *//' | paste - - | \
  sed -E 's/, Testing net \(#0\)\s*Test net output #0://'
echo "sharing + finetuning (log: $D/lenet_gradual.log)"
logged $D/lenet_gradual.log minicaffe train --solver=$D/lenet_gradual_solver.prototxt \
  --weights=$D/lenet_agp_iter_2000.caffemodel
cp $D/lenet_gradual_shared_iter_500.caffemodel $D/lenet_gradual.caffemodel
logged $D/lenet_gradual_mcz.log minicaffe compress --model=$D/lenet_train_test.prototxt \
  --weights=$D/lenet_gradual.caffemodel -o $D/lenet_gradual.mcz
echo
stages=("dense" $D/lenet_iter_2000.caffemodel)
if [ -f $D/lenet_compressed.caffemodel ]; then
  stages+=("one-shot (prune_finetune)" $D/lenet_compressed.caffemodel)
fi
stages+=("AGP pruned" $D/lenet_agp_iter_2000.caffemodel "AGP + shared" $D/lenet_gradual.caffemodel)
python $D/report.py "${stages[@]}"
echo
dense=$(stat -c %s $D/lenet_iter_2000.caffemodel)
mcz=$(stat -c %s $D/lenet_gradual.mcz)
echo "dense caffemodel: $dense bytes, lenet_gradual.mcz: $mcz bytes ($(python -c "print(f'{$dense / $mcz:.1f}')")x smaller)"
