# syntax=docker/dockerfile:1
# One Dockerfile for every part of ckpt. Targets:
#   docker build --target api      -t ghcr.io/ckpt-dev/ckpt:0.1.0 .        # checkpoints API
#   docker build --target operator -t ghcr.io/ckpt-dev/ckpt:0.1.0 .        # kopf operator
#   docker build --target agent    -t ghcr.io/ckpt-dev/ckpt-agent:0.1.0 .  # node agent
# api and operator are the same image (Python slim, non-root) with a different default
# command; deploy/ runs both from ghcr.io/ckpt-dev/ckpt and sets the command itself. The agent
# is its own image: it needs CRIU >= 4.2 (Debian forky's package on a Debian 13 base; older
# CRIUs fail on current kernels), runc and iptables, and it runs as root; it also carries the static
# ckpt-runc wrapper (cmd/ckpt-runc), which it installs on its node for containerd.
#
# The base images are build arguments: Docker users build this file unchanged with the public
# defaults; tools/images/build.sh builds it with buildah on Debian images made by mmdebstrap.
# Only python3 is used (Debian's own python has no `python` command; the official images have
# both).
#
# Trusted CA: steps that download (pip) take an optional build secret `ca`, a PEM bundle for
# networks whose egress presents its own CA:
#   docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt ...
# It is mounted for that step only, so it never becomes part of a layer; without it the steps
# use the image's own trust store.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG AGENT_BASE_IMAGE=debian:trixie-slim
ARG GO_IMAGE=golang:1.24-bookworm

# ---------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
# The dependencies as requirement files, from pyproject.toml alone: the images install them in
# a layer of their own that a change to src/ leaves cached. agent.txt: the wheel's
# dependencies; api.txt adds the postgres extra (the API can then use a PostgreSQL URL).
RUN mkdir /requirements \
    && python3 -c 'import tomllib; \
p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
base = p["dependencies"]; \
open("/requirements/agent.txt", "w").write("\n".join(base) + "\n"); \
pg = p["optional-dependencies"]["postgres"]; \
open("/requirements/api.txt", "w").write("\n".join(base + pg) + "\n")'
COPY src ./src
# The build backend (setuptools, from pyproject's build-system) is fetched in an isolated
# build environment; --no-deps: only ckpt's own wheel, its dependencies come from the index.
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# ---------------------------------------------------------------------------- wrapper
# The ckpt-runc wrapper: a static binary (hosts have no Python and any libc), standard library
# only, so the build needs no network (GOPROXY=off makes a new dependency fail here, loudly)
# and GOTOOLCHAIN=local keeps go from fetching another toolchain.
FROM ${GO_IMAGE} AS wrapper
WORKDIR /src
COPY cmd/ckpt-runc ./
# ckpt-cuda-restore, the wrapper's GPU hook (same module), asks the node's GPU agent to resume
# the CUDA state of a restored container.
RUN CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=readonly \
    go build -trimpath -ldflags='-s -w' -o /out/ckpt-runc . \
    && CGO_ENABLED=0 GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=readonly \
    go build -trimpath -ldflags='-s -w' -o /out/ckpt-cuda-restore ./cudarestore

# ---------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/ckpt \
    PATH=/opt/ckpt/bin:$PATH
# A named user, not only a uid, so that lookups of the user (getpass, ps) work. No home: in
# the cluster the root filesystem is read-only and /tmp is the only writable place.
RUN groupadd --system --gid 65532 ckpt \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin ckpt
# Dependencies first, in their own layer, then the wheel alone. Both are copied from the
# builder, not bind-mounted: buildah's layer cache does not notice a changed stage behind
# RUN --mount=type=bind,from=... and would keep a stale install (containers/buildah#4522),
# while COPY --from is keyed by content (the copies are a few hundred KiB). `pip check` proves the wheel's declared
# dependencies are what the first layer installed. DL3013 (pin versions) does not apply: the
# requirements are pyproject's own bounds.
# hadolint ignore=DL3013
COPY --from=builder /requirements/api.txt /tmp/requirements.txt
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY --from=builder /dist/ /tmp/dist/
RUN pip install --no-cache-dir --no-deps /tmp/dist/ckpt-*.whl \
    && rm -rf /tmp/dist \
    && pip check \
    && ckpt --help >/dev/null
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["ckpt"]

# ---------------------------------------------------------------------------- api
FROM runtime AS api
EXPOSE 8080
CMD ["api", "serve", "--host", "0.0.0.0", "--port", "8080"]

# ---------------------------------------------------------------------------- operator
FROM runtime AS operator
# kopf's liveness endpoint and Prometheus metrics.
EXPOSE 8080 9090
CMD ["operator", "run"]

# ---------------------------------------------------------------------------- agent
FROM ${AGENT_BASE_IMAGE} AS agent
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/ckpt \
    PATH=/opt/ckpt/bin:$PATH
# Unpinned on purpose: Debian stable only ships security and bug fixes, and exact versions
# vanish from the archive when they are superseded, which would break every later build.
# iptables: CRIU locks the container's network with iptables-restore during the dump.
# CRIU comes from CRIU_SUITE (Debian forky: 4.2.1), everything else from the base's own suite:
# Linux 6.16 restricted SO_PASSCRED/SO_PASSSEC to unix, netlink and bluetooth sockets and
# CRIU 4.1 (trixie's) asks them of every socket, so it cannot dump any process holding a TCP
# socket on current kernels ("sockets: Can't get 1:16 opt: Operation not supported"); 4.2
# fixed it. The pin keeps every other package on the base's suite unless criu needs a newer one.
# DEBIAN_CHECK_VALID_UNTIL=no only for a mirror that serves a frozen copy of the archive (its
# Release files expire while their signatures stay good); tools/images/build.sh passes what
# the building machine's apt is configured with.
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
ARG DEBIAN_CHECK_VALID_UNTIL=yes
ARG CRIU_SUITE=forky
# hadolint ignore=DL3008
RUN echo "deb [check-valid-until=${DEBIAN_CHECK_VALID_UNTIL}] ${DEBIAN_MIRROR} ${CRIU_SUITE} main" \
       >/etc/apt/sources.list.d/criu.list \
    && printf 'Package: *\nPin: release n=%s\nPin-Priority: 100\n' "${CRIU_SUITE}" \
       >/etc/apt/preferences.d/criu \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
       ca-certificates iptables python3 python3-venv runc \
    && apt-get install -y --no-install-recommends -t "${CRIU_SUITE}" criu \
    && rm -rf /var/lib/apt/lists/*
# Fail the build, not the first checkpoint, if the suite ever ships a CRIU older than 4.2.
RUN criu --version \
    && criu --version | awk '/^Version:/ { split($2, v, "."); \
         ok = (v[1] > 4 || (v[1] == 4 && v[2] >= 2)) } END { exit !ok }' \
    && runc --version
# CRIU options for every dump the agent runs through runc: runc hands CRIU /etc/criu/runc.conf
# when the container's config names no CRIU configuration of its own (org.criu.config), and
# containerd's never does. skip-in-flight: a connection the kernel completed but the frozen
# server had not accepted yet is dropped (its client sees a reset, as for the established ones
# a restore closes) instead of failing the dump ("inet: In-flight connection"), which a busy
# server, or a readiness probe at the wrong moment, made happen.
RUN mkdir -p /etc/criu && printf 'skip-in-flight\n' >/etc/criu/runc.conf
# Debian's python3 is "externally managed" (PEP 668): ckpt gets its own virtual environment.
# Dependencies, then the wheel, as in the runtime stage (and for the same reasons).
# hadolint ignore=DL3013
COPY --from=builder /requirements/agent.txt /tmp/requirements.txt
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY --from=builder /dist/ /tmp/dist/
RUN pip install --no-cache-dir --no-deps /tmp/dist/ckpt-*.whl \
    && rm -rf /tmp/dist \
    && pip check \
    && ckpt --help >/dev/null
# The agent installs this on its node as containerd's BinaryName for the `ckpt` runtime.
COPY --from=wrapper /out/ckpt-runc /out/ckpt-cuda-restore /usr/local/bin/
# No USER: the agent runs as root (the image's default) on purpose; CRIU and runc need it,
# and the DaemonSet runs it privileged.
EXPOSE 8443
ENTRYPOINT ["ckpt"]
CMD ["agent", "serve"]
