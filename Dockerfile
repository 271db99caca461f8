# The gateway's image, the one the Helm chart (helm/gateway) runs.
#
#   docker build -t distillation-gateway:0.1.0 .
#   docker run --rm -p 8080:8080 distillation-gateway:0.1.0
#
# Two stages: the first builds the project's wheel and installs it, with its dependencies
# (all from binary wheels), into /opt/venv, a venv without pip; the second is a fresh slim
# Python with that venv and the default configuration: no compiler, no sources, no wheels.
# Not built in this repository's CI (no Docker engine there): `make lint` runs hadolint on it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore lets in only what the wheel needs: pyproject.toml, README.md, the packages.
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install /wheels/*.whl

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="distillation-gateway" \
      org.opencontainers.image.description="OpenAI-compatible inference gateway: teacher/student routing, traffic capture, distillation loop"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A fixed, unprivileged uid/gid (the chart's runAsUser/runAsGroup).
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gateway \
    && install -d -o 10001 -g 10001 /var/lib/gateway
COPY --from=build /opt/venv /opt/venv
# The embedded defaults, for `docker run` without a mounted configuration; the chart mounts
# its ConfigMap over /etc/gateway.
COPY config/gateway.yaml /etc/gateway/gateway.yaml
# The working directory is writable: the default capture store is SQLite (./gateway.db).
WORKDIR /var/lib/gateway
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["gateway"]
CMD ["serve", "--config", "/etc/gateway/gateway.yaml", "--host", "0.0.0.0"]
