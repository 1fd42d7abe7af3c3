# syntax=docker/dockerfile:1
#
# ftpsource container image.
#   docker build -t ftpsource:0.1.0 .
# The final stage holds only the Python runtime and a virtualenv with ftpsource installed: no compiler,
# no pip cache, no source tree. It runs as uid 10001, needs write access only to /var/lib/ftpsource
# (the SQLite state, a volume) and /tmp, and so works with a read-only root filesystem.

# The base image, pinned by digest so that a rebuild gets the same bytes; the tag says what it is.
# A digest can only name an image of the docker.io/library/python repository, so a wrong one fails the
# build ("not found") rather than fetching something else. To move to a newer python:3.11-slim, read
# its current index digest and put it here and in deploy/examples/etl/test-ftp/Dockerfile:
#   docker buildx imagetools inspect python:3.11-slim --format '{{json .Manifest.Digest}}'
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/ftpsource
WORKDIR /src
# Dependencies first, at the versions constraints.txt pins (the ones CI tests): this layer is built
# again only when the pins or the dependency list change, not on every edit of the source.
COPY constraints.txt pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
 && /opt/ftpsource/bin/pip install -c constraints.txt -r /tmp/requirements.txt
# .dockerignore keeps the context to what `pip wheel .` needs.
COPY README.md ./
COPY proto/ proto/
COPY ftpsource/ ftpsource/
# Build a wheel so the venv receives an ordinary installed package (no source tree or egg-link),
# check that the pinned dependencies satisfy it, then compile bytecode once here: the running
# container cannot write .pyc files.
RUN /opt/ftpsource/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/ftpsource/bin/pip install --no-deps /tmp/wheels/ftpsource-*.whl \
 && /opt/ftpsource/bin/pip check \
 && /opt/ftpsource/bin/python -m compileall -q /opt/ftpsource \
 && /opt/ftpsource/bin/ftpsource --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="ftpsource" \
      org.opencontainers.image.description="File-arrival event source for Argo Events (FTP, FTPS, SFTP, local directories)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/ftpsource/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    FTPSOURCE_LOG_FORMAT=json
RUN groupadd --system --gid 10001 ftpsource \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin ftpsource \
 && mkdir -p /var/lib/ftpsource /etc/ftpsource/credentials /etc/ftpsource/auth \
 && chown 10001:10001 /var/lib/ftpsource \
 && chmod 0750 /var/lib/ftpsource
COPY --from=builder /opt/ftpsource /opt/ftpsource
VOLUME ["/var/lib/ftpsource"]
WORKDIR /var/lib/ftpsource
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# 8080: gRPC (Argo's generic EventSource contract); 9090: /metrics, /healthz, /readyz.
EXPOSE 8080 9090
# The slim image has no curl; the interpreter is already there.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=4).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["ftpsource"]
CMD ["serve", "--state", "/var/lib/ftpsource/ftpsource.db", "--credentials-dir", "/etc/ftpsource/credentials", "--auth-token-file", "/etc/ftpsource/auth/token", "--log-format", "json"]
