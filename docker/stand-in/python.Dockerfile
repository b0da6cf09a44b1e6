# A stand-in for python:3.11.x-slim-bookworm, built from Debian packages, for hosts that reach
# Debian's archive but no container registry (scripts/compose-test.sh builds it). Debian 12's
# python3 is 3.11; like the official image, it answers to `python` and makes virtualenvs.
ARG DEBIAN_IMAGE=aeq-stand-in/debian:bookworm
FROM ${DEBIAN_IMAGE}
ENV LANG=C.UTF-8
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python
CMD ["python3"]
