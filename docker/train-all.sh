#!/bin/sh
# The training image's one-shot job: train the five autoencoders, then export them to ONNX, check
# parity and publish them into the model repository that the workers read.
#
# MNIST comes from, in order: AEQ_DATA_DIR if set (docker run -e); /data if a folder with files is
# mounted there (compose mounts AEQ_HOST_DATA_DIR); else the keras download, cached in ~/.keras
# (a volume).
# Extra arguments go to `aeq train all` (e.g. --epochs 5 --limit 2000 for a quick run).
set -eu

DATA_MOUNT=/data
if [ -z "${AEQ_DATA_DIR:-}" ] && [ -n "$(ls -A "$DATA_MOUNT" 2>/dev/null)" ]; then
    export AEQ_DATA_DIR="$DATA_MOUNT"
fi
echo "aeq-train-all: MNIST from ${AEQ_DATA_DIR:-the keras download/cache}"

aeq train all --out "$AEQ_TRAINING_DIR" --overwrite "$@"
aeq export all --from "$AEQ_TRAINING_DIR" --repository "$AEQ_MODEL_REPOSITORY"
aeq models
