#!/usr/bin/env bash
# The GPU image's worker command: one `aeq worker` process per GPU the container can see.
#
# `aeq worker --concurrency 1` runs one process (Celery's solo pool) on the device that
# CUDA_VISIBLE_DEVICES names, so this starts one such worker per GPU, named aeq-gpuN@HOST, with the
# GPU's UUID (unambiguous, whatever order CUDA enumerates devices in). Arguments go to every worker
# (compose passes --require-gpu). If any worker exits, the others are stopped and the container
# exits with that worker's status, so the restart policy restarts the set and the logs say why.
#
#   aeq-gpu-workers [AEQ WORKER OPTIONS]   start the workers
#   aeq-gpu-workers healthcheck            succeed only if every GPU's worker answers a ping
set -euo pipefail

PING_TIMEOUT_S=10

gpus() {
    # "index, uuid" per GPU; nvidia-smi comes with the NVIDIA Container Toolkit's utility capability.
    nvidia-smi --query-gpu=index,uuid --format=csv,noheader 2>/dev/null | tr -d ' ' || true
}

node_name() {
    echo "aeq-gpu$1@$2"
}

healthcheck() {
    local line
    for line in $(gpus); do
        celery -A worker.app inspect ping --destination "$(node_name "${line%%,*}" "$HOSTNAME")" \
            --timeout "$PING_TIMEOUT_S" >/dev/null || return 1
    done
}

start_workers() {
    local line pids=() status=0
    local -a found
    mapfile -t found < <(gpus)
    if [ "${#found[@]}" -eq 0 ]; then
        echo "aeq-gpu-workers: no GPU visible; the host needs the NVIDIA driver and Container" \
            "Toolkit, and the service an NVIDIA device reservation" >&2
        exit 1
    fi
    for line in "${found[@]}"; do
        CUDA_VISIBLE_DEVICES="${line#*,}" aeq worker --concurrency 1 \
            --hostname "$(node_name "${line%%,*}" "%h")" "$@" &
        pids+=("$!")
    done
    echo "aeq-gpu-workers: ${#found[@]} worker(s), one per GPU" >&2
    trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT
    wait -n || status=$?
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait || true
    exit "$status"
}

if [ "${1:-}" = "healthcheck" ]; then
    healthcheck
else
    start_workers "$@"
fi
