# A stand-in for redis:7.x-alpine, built from Debian packages (Debian 12's redis-server is 7.0), for
# hosts that reach Debian's archive but no container registry (scripts/compose-test.sh builds it).
# Like the official image it runs as the redis user, uid 999, and keeps its data in /data, owned by
# that user, so a fresh named volume mounted there starts out writable.
ARG DEBIAN_IMAGE=aeq-stand-in/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN groupadd --system --gid 999 redis \
    && useradd --system --uid 999 --gid redis --home-dir /var/lib/redis --shell /usr/sbin/nologin redis \
    && apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o redis -g redis /data
WORKDIR /data
USER 999:999
EXPOSE 6379
CMD ["redis-server"]
