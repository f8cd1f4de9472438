#!/usr/bin/env bash
# Train LeNet on the digits that ship with the repo; leaves models/digits/lenet_iter_2000.caffemodel.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -d models/digits/digits_train_lmdb ] || [ ! -d models/digits/digits_test_lmdb ]; then
  python models/digits/create_digits.py
fi
minicaffe train --solver=models/digits/lenet_solver.prototxt "$@"
