#!/bin/sh
# Where the GPU image's CUDA and cuDNN libraries come from (docker/worker-gpu.Dockerfile, build
# argument CUDA_LIBRARIES): `image` (the base image has them, as nvidia/cuda's cudnn images do) or
# `wheels` (NVIDIA's PyPI wheels, through onnxruntime-gpu's extras).
#
#   cuda-libraries.sh requirements SOURCE   print the extra pip requirement lines SOURCE needs
#   cuda-libraries.sh configure SOURCE      wheels: put their lib folders in the loader's path
#   cuda-libraries.sh check                 fail, naming them, if ONNX Runtime's CUDA provider
#                                           library has unresolved dependencies
# libcuda.so.1 is the driver's, mounted in at run time by the NVIDIA Container Toolkit: `check`
# does not ask for it.
set -eu

LOADER_CONF=/etc/ld.so.conf.d/aeq-nvidia-wheels.conf

site_packages() {
    python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"
}

case "${1:-}:${2:-}" in
requirements:image) ;;
requirements:wheels) echo "onnxruntime-gpu[cuda,cudnn]" ;;
configure:image) ;;
configure:wheels)
    find "$(site_packages)/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib | sort > "$LOADER_CONF"
    test -s "$LOADER_CONF" || { echo "cuda-libraries.sh: no nvidia-* wheel lib folders" >&2; exit 1; }
    ldconfig
    ;;
check:*)
    provider="$(site_packages)/onnxruntime/capi/libonnxruntime_providers_cuda.so"
    missing=$(ldd "$provider" | awk '/not found/ && $1 != "libcuda.so.1" {print $1}')
    if [ -n "$missing" ]; then
        echo "cuda-libraries.sh: ONNX Runtime's CUDA provider cannot load:" $missing >&2
        exit 1
    fi
    ;;
*)
    echo "usage: cuda-libraries.sh requirements|configure image|wheels, or check (got '$*')" >&2
    exit 2
    ;;
esac
