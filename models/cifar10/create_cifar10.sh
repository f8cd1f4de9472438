#!/usr/bin/env bash
# Convert the user's CIFAR-10 binary data to LMDBs and compute the mean image.
# Usage: bash models/cifar10/create_cifar10.sh path/to/cifar-10-binary.tar.gz (or the extracted folder)
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${1:?usage: create_cifar10.sh cifar-10-binary.tar.gz}
rm -rf models/cifar10/cifar10_train_lmdb models/cifar10/cifar10_test_lmdb
minicaffe convert_cifar_data "$SRC" models/cifar10
minicaffe compute_image_mean models/cifar10/cifar10_train_lmdb models/cifar10/mean.binaryproto
