#!/usr/bin/env bash
# Prune and finetune cifar10_quick in three stages of rising sparsity (33%, 50%, 66% of conv1-3 and
# ip1), each starting from the last. Needs the trained model of train_quick.sh and the CIFAR-10
# LMDBs of create_cifar10.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=models/cifar10
W=${1:-$D/cifar10_quick_iter_5000.caffemodel.h5}
[ -f "$W" ] || { echo "trained model $W not found: run models/cifar10/train_quick.sh first" >&2; exit 1; }
for stage in 1 2 3; do
  minicaffe train --solver=$D/cifar10_quick_solver_stage_$stage.prototxt --weights="$W"
  W=$D/cifar10_quick_stage_${stage}_iter_2000.caffemodel.h5
  minicaffe inspect "$W" --model=$D/cifar10_quick_cmp_train_test_stage_$stage.prototxt
done
