# syntax=docker/dockerfile:1
#
# Build:  docker build -t pg-cache-invalidator .
# Run:    docker run --rm -p 9464:9464 -e INVALIDATOR_DSN='postgresql://invalidator:...@db:5432/app' \
#           -v "$PWD/config.yaml:/etc/invalidator/config.yaml:ro" pg-cache-invalidator
#         (any other command: `docker run ... pg-cache-invalidator check --offline`)
#
# Two stages: the builder turns the project and every dependency into wheels; the final
# image installs only those wheels (no compiler, no build tools, no pip cache) and runs as
# the unprivileged numeric user 10001, which Kubernetes' runAsNonRoot can verify.
# The wheels are bind-mounted from the builder (BuildKit), so they never become a layer.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# A C compiler for the project's own extension (invalidator/hotpath/_hotpath.c, the delete hot
# path); it stays in this stage: the final image gets the compiled wheel only.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

# Dependency wheels first: this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml setup.py README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip wheel --wheel-dir /wheels --requirement /tmp/requirements.txt

# Then the project's own wheel.
COPY invalidator ./invalidator
RUN pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="pg-cache-invalidator" \
      org.opencontainers.image.description="Streams PostgreSQL changes (wal2json) and deletes the memcached keys they invalidate, on the node pymemcache's HashClient uses" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    INVALIDATOR_CONFIG=/etc/invalidator/config.yaml

RUN groupadd --system --gid 10001 invalidator \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin invalidator

# Only wheels from the builder stage; --no-index: nothing else may be fetched or compiled.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels pg-cache-invalidator \
 && invalidator --version

USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["invalidator"]
CMD ["run"]
