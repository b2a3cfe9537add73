# The controller worker image. The broker is not part of it: point KAFKA_BOOTSTRAP_SERVERS at one.
# The first stage builds the wheel with the compiled prediction lane (native/, Rust); the image
# itself carries neither Rust nor a compiler.
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
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels && useradd --create-home --uid 10001 rollout \
 && python -c "from controller.stream import native; assert native.available()" \
 && mkdir -p /var/lib/rollout && chown rollout /var/lib/rollout
USER rollout
# the worker's folder goes on /var/lib/rollout (mount a volume there): /app stays root-owned
ENV KAFKA_BOOTSTRAP_SERVERS=kafka:9092 \
    ROLLOUT_DATA_DIR=/var/lib/rollout \
    OTEL_TRACES_EXPORTER=none
VOLUME ["/var/lib/rollout"]
ENTRYPOINT ["rollout"]
CMD ["worker"]
