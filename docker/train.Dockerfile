# aeq training image: TensorFlow (CPU build), Keras 3 and tf2onnx, to train the five autoencoders and
# export them into the model repository volume. One-shot: `aeq-train-all` trains and exports all five.
# Build from the repository root: docker build -f docker/train.Dockerfile -t aeq-train .
# Build argument PYTHON_IMAGE and the optional `ca` secret: as in docker/worker.Dockerfile.

# Empty or unset: the pinned default.
ARG PYTHON_IMAGE

FROM ${PYTHON_IMAGE:-python:3.11.15-slim-bookworm} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/aeq/bin:$PATH
# The same uid as the worker images: the repository this image writes is the one they read.
# /trained and the keras cache are created here so that fresh named volumes mounted on them start
# out owned by that user.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/aeq aeq \
    && python -m venv /opt/aeq \
    && install -d -o aeq -g aeq /models /trained /home/aeq/.keras

FROM base AS deps
WORKDIR /build
COPY pyproject.toml docker/requirements.py ./
RUN --mount=type=secret,id=ca \
    python requirements.py pyproject.toml --extra train --cpu-only > requirements.txt \
    && if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && pip install -r requirements.txt

FROM deps AS wheel
COPY . /src
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src

FROM deps AS train
COPY --chmod=0755 docker/train-all.sh /usr/local/bin/aeq-train-all
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install --no-deps /wheels/*.whl \
    && python -c "import tensorflow, tf2onnx, onnxruntime, cli"
WORKDIR /home/aeq
USER 10001:10001
ENV AEQ_MODEL_REPOSITORY=/models \
    AEQ_TRAINING_DIR=/trained
CMD ["aeq-train-all"]
