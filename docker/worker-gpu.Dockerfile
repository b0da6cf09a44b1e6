# aeq GPU worker image: the serving side with onnxruntime-gpu on NVIDIA's CUDA 13 + cuDNN 9 runtime.
# Linux x86_64 only (onnxruntime-gpu has no other wheels); the host needs the NVIDIA driver (580 or
# newer for CUDA 13) and the NVIDIA Container Toolkit.
# Build from the repository root: docker build -f docker/worker-gpu.Dockerfile -t aeq-worker-gpu .
#
# BuildKit, no `# syntax` line, and the optional `ca` secret: as in docker/worker.Dockerfile.
# Build arguments:
#   CUDA_IMAGE      the base: a Debian or Ubuntu image whose apt has python3 (3.11+), python3-venv.
#   CUDA_LIBRARIES  where CUDA and cuDNN come from: `image` (default: the base has them, as NVIDIA's
#                   does) or `wheels` (NVIDIA's PyPI wheels, through onnxruntime-gpu's cuda and cudnn
#                   extras, put on the loader's path), which needs no NVIDIA image, e.g.
#   docker build -f docker/worker-gpu.Dockerfile --build-arg CUDA_IMAGE=debian:12 \
#       --build-arg CUDA_LIBRARIES=wheels -t aeq-worker-gpu .

# Empty or unset: the pinned default.
ARG CUDA_IMAGE

FROM ${CUDA_IMAGE:-nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/aeq/bin:$PATH
# The base's Python in a virtualenv (Ubuntu 24.04's 3.12 is externally managed; Debian 12's is 3.11).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/aeq aeq \
    && python3 -m venv /opt/aeq \
    && install -d -o aeq -g aeq /models

# Dependencies, unchanged from pyproject.toml (it selects onnxruntime-gpu on Linux x86_64), with the
# ONNX Runtime build pinned to the base image's CUDA major version. With CUDA_LIBRARIES=wheels, the
# CUDA and cuDNN wheels come too and their lib folders go into the loader's configuration, so ONNX
# Runtime's CUDA provider finds them in every process, whatever its environment.
FROM base AS deps
ARG CUDA_LIBRARIES
WORKDIR /build
COPY pyproject.toml docker/requirements.py docker/gpu-constraints.txt docker/cuda-libraries.sh ./
RUN --mount=type=secret,id=ca \
    python requirements.py pyproject.toml > requirements.txt \
    && sh cuda-libraries.sh requirements "${CUDA_LIBRARIES:-image}" >> requirements.txt \
    && if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && pip install -r requirements.txt -c gpu-constraints.txt \
    && sh cuda-libraries.sh configure "${CUDA_LIBRARIES:-image}" \
    && python -c "import onnxruntime as ort; assert 'CUDAExecutionProvider' in ort.get_available_providers(), 'not the CUDA build of ONNX Runtime'" \
    && sh cuda-libraries.sh check

FROM deps AS wheel
COPY . /src
# The serving side only: the benchmark, the quality report, the demo (extras, with their commands)
# and the private test service are never run by a worker, so its wheel is built without them.
RUN rm -r /src/aeq/bench /src/aeq/evaluation /src/aeq/demo.py /src/aeq/private_service.py \
    && pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src

FROM deps AS worker
COPY --chmod=0755 docker/gpu-workers.sh /usr/local/bin/aeq-gpu-workers
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-deps /wheels/*.whl \
    && python -c "import worker.app, cli" \
    && ! python -c "import tensorflow" 2>/dev/null \
    && ! python -c "import aeq.bench" 2>/dev/null
WORKDIR /home/aeq
USER 10001:10001
ENV AEQ_MODEL_REPOSITORY=/models \
    AEQ_PROVIDERS=cuda,cpu
# Healthy when the worker of every GPU answers a Celery ping.
HEALTHCHECK --interval=30s --timeout=60s --start-period=60s --retries=3 \
    CMD ["aeq-gpu-workers", "healthcheck"]
# One `aeq worker` per visible GPU. --require-gpu: a host whose CUDA cannot load makes the workers
# exit instead of serving on the CPU.
CMD ["aeq-gpu-workers", "--require-gpu", "--loglevel", "info"]
