#!/usr/bin/env bash
# Caffe's cifar10_full recipe: three stages, each resuming the last.
set -euo pipefail
cd "$(dirname "$0")/../.."
minicaffe train --solver=models/cifar10/cifar10_full_solver.prototxt "$@"
minicaffe train --solver=models/cifar10/cifar10_full_solver_lr1.prototxt \
  --snapshot=models/cifar10/cifar10_full_iter_60000.solverstate.h5 "$@"
minicaffe train --solver=models/cifar10/cifar10_full_solver_lr2.prototxt \
  --snapshot=models/cifar10/cifar10_full_iter_65000.solverstate.h5 "$@"
