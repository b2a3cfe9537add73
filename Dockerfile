# The controller worker image. The broker is not part of it: point KAFKA_BOOTSTRAP_SERVERS at one.
# The first stage builds the wheel with the compiled prediction lane (native/, Rust); the image
# itself carries neither Rust nor a compiler. Its Python dependencies are the exact versions and
# hashes of requirements.lock (`make lock` regenerates it from pyproject.toml): a rebuild
# installs the same bytes, and a download that does not match its hash fails the build.
FROM rust:1-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY native ./native
COPY schemas ./schemas
COPY controller ./controller
RUN python3 -m venv /venv && /venv/bin/pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# the dependencies first (their layer is reused while the lock is unchanged), then the project
# alone; `pip check` proves the lock satisfies the project's requirements
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY --from=build /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -rf /wheels && pip check \
 && python -c "from controller.stream import native; assert native.available()" \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin rollout \
 && mkdir -p /var/lib/rollout && chown 10001:10001 /var/lib/rollout
# Runs as uid 10001 on a read-only root filesystem: the only writes are the worker's
# `<group>-data` folder (and the label join's store) under ROLLOUT_DATA_DIR, a volume. No
# bytecode is written at run time (PYTHONDONTWRITEBYTECODE; pip compiled it at install), HOME
# does not exist, and anything that wants a cache or a temporary file gets /tmp (mount an
# emptyDir there). tests/deploy/test_image_entrypoint.py runs this entrypoint with these
# settings as uid 10001 and checks that nothing else is written.
USER 10001:10001
ENV KAFKA_BOOTSTRAP_SERVERS=kafka:9092 \
    ROLLOUT_DATA_DIR=/var/lib/rollout \
    HOME=/nonexistent \
    XDG_CACHE_HOME=/tmp/.cache \
    TMPDIR=/tmp \
    OTEL_TRACES_EXPORTER=none
VOLUME ["/var/lib/rollout"]
ENTRYPOINT ["rollout"]
CMD ["worker"]
