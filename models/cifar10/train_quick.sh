#!/usr/bin/env bash
# Caffe's cifar10_quick recipe: 4,000 iterations at lr 0.001, then 1,000 more at 0.0001.
set -euo pipefail
cd "$(dirname "$0")/../.."
minicaffe train --solver=models/cifar10/cifar10_quick_solver.prototxt "$@"
minicaffe train --solver=models/cifar10/cifar10_quick_solver_lr1.prototxt \
  --snapshot=models/cifar10/cifar10_quick_iter_4000.solverstate.h5 "$@"
