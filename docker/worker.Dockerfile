# aeq CPU worker image: the serving side only. No TensorFlow, and ONNX Runtime's CPU build instead of
# the CUDA build that pyproject.toml selects on Linux x86_64 (hundreds of MB this image never uses).
# Targets: `worker` (default, `aeq worker`) and `flower` (the worker image plus Celery Flower).
# Build from the repository root: docker build -f docker/worker.Dockerfile -t aeq-worker .
#
# Builds with BuildKit (Docker 23+ by default; DOCKER_BUILDKIT=1 before that) and needs no frontend
# image: there is no `# syntax` line, so a host without a registry builds it too. Build arguments:
#   PYTHON_IMAGE  the base: a Debian Python 3.11+ image with `python` on PATH (default below);
# and one optional BuildKit secret:
#   --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt  a CA bundle for pip, for a network that
#       intercepts TLS. It is mounted only while pip runs, never written into a layer.

# Empty or unset: the pinned default.
ARG PYTHON_IMAGE

FROM ${PYTHON_IMAGE:-python:3.11.15-slim-bookworm} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/aeq/bin:$PATH
# One unprivileged user, the same uid in every aeq image, so the shared model volume is readable
# (and, for the training image, writable) whichever image mounts it first.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/aeq aeq \
    && python -m venv /opt/aeq \
    && install -d -o aeq -g aeq /models

# Dependencies: rebuilt only when pyproject.toml (or the requirement chooser) changes.
FROM base AS deps
WORKDIR /build
COPY pyproject.toml docker/requirements.py ./
RUN --mount=type=secret,id=ca \
    python requirements.py pyproject.toml --cpu-only > requirements.txt \
    && if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && pip install -r requirements.txt

# aeq's own wheel, built offline from the source (setuptools came with the dependencies).
FROM deps AS wheel
COPY . /src
# The serving side only: the benchmark, the quality report, the demo (extras, with their commands)
# and the private test service are never run by a worker, so its wheel is built without them.
RUN rm -r /src/aeq/bench /src/aeq/evaluation /src/aeq/demo.py /src/aeq/private_service.py \
    && pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src

# The installed application, shared by the two targets below.
FROM deps AS app
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-deps /wheels/*.whl \
    && python -c "import onnxruntime, worker.app, cli" \
    && ! python -c "import tensorflow" 2>/dev/null \
    && ! python -c "import aeq.bench" 2>/dev/null
WORKDIR /home/aeq
ENV AEQ_MODEL_REPOSITORY=/models \
    AEQ_PROVIDERS=cpu

FROM app AS flower
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && pip install flower==2.2.0
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5555/healthcheck', timeout=5)"]
EXPOSE 5555
CMD ["celery", "-A", "worker.app", "flower", "--address=0.0.0.0", "--port=5555"]

# Last, so that a build without --target gives the worker.
FROM app AS worker
USER 10001:10001
# A worker is healthy when it answers a Celery ping under the node name its command gives it.
HEALTHCHECK --interval=30s --timeout=20s --start-period=30s --retries=3 \
    CMD ["sh", "-c", "celery -A worker.app inspect ping --destination \"aeq@$HOSTNAME\" --timeout 10 >/dev/null"]
CMD ["aeq", "worker", "--hostname", "aeq@%h", "--loglevel", "info"]
