# The controller worker image. The broker is not part of it: point KAFKA_BOOTSTRAP_SERVERS at one.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY schemas ./schemas
COPY controller ./controller
RUN pip install . && useradd --create-home --uid 10001 rollout
USER rollout
ENV KAFKA_BOOTSTRAP_SERVERS=kafka:9092 \
    OTEL_TRACES_EXPORTER=none
ENTRYPOINT ["rollout"]
CMD ["worker"]
