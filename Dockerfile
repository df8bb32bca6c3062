# syntax=docker/dockerfile:1
# Tidings as one container: `docker build -t tidings .`, then see the README's "Container".
#
# BASE is any Debian-like image with Python 3.11 or newer and the venv module. The default is
# the public slim image (python3 in /usr/local/bin); Debian's own python3 (/usr/bin) works as
# well, which is how `make image-test` builds it where no registry can be reached. Both stages
# use the same BASE, because the virtualenv links to the interpreter it was made with.
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
RUN python3 -m venv /opt/tidings
# Only what the package is built from (.dockerignore keeps the rest out of the context).
COPY . /src
# The CA bundle secret is for builders behind a TLS-inspecting proxy; it is never stored in a
# layer. Without it pip uses the base image's own certificates.
RUN --mount=type=secret,id=pipca,required=false \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi && \
    /opt/tidings/bin/pip install --no-cache-dir --disable-pip-version-check /src

FROM ${BASE}
# A fixed numeric user, so Kubernetes can check runAsNonRoot and the Helm chart's fsGroup and
# runAsUser match the files made here.
ARG UID=10001
RUN groupadd --gid "${UID}" tidings && \
    useradd --uid "${UID}" --gid "${UID}" --home-dir /var/lib/tidings --no-create-home --no-log-init \
        --shell /usr/sbin/nologin tidings && \
    mkdir -p /etc/tidings/policies /var/lib/tidings && \
    chown "${UID}:${UID}" /var/lib/tidings && chmod 0700 /var/lib/tidings
COPY --from=build /opt/tidings /opt/tidings

ENV PATH=/opt/tidings/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TIDINGS_HOST=0.0.0.0 \
    TIDINGS_PORT=8080 \
    TIDINGS_POLICY_DIR=/etc/tidings/policies \
    TIDINGS_DATA_DIR=/var/lib/tidings
# Policies are mounted read-only at /etc/tidings/policies (a directory, a ConfigMap, a git
# checkout); the SQLite store lives on the volume, owned by the image's user.
VOLUME ["/var/lib/tidings"]
WORKDIR /var/lib/tidings
USER ${UID}:${UID}
EXPOSE 8080
# No curl in the image: the interpreter Tidings runs on asks /healthz itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/opt/tidings/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TIDINGS_PORT', '8080'), timeout=4)"]
# Exec form: tidings is PID 1 and gets SIGTERM itself, finishes in-flight sends (up to
# TIDINGS_SHUTDOWN_GRACE_SECONDS) and exits 0.
ENTRYPOINT ["/opt/tidings/bin/tidings"]
CMD ["serve"]
