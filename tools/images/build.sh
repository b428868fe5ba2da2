#!/usr/bin/env bash
# Builds ckpt's container images from the project's Dockerfile without a Docker engine:
#
# 1. Base images from Debian's packages with mmdebstrap (cached in buildah's storage under a
#    tag that hashes their recipe), standing in for the public images the Dockerfile names by
#    default (python:3.11-slim-bookworm, debian:trixie-slim, golang:1.24-bookworm):
#      python  bookworm minbase + python3, python3-venv, python3-pip (Debian 12's python is 3.11)
#      agent   trixie minbase (Debian 13; the Dockerfile takes criu 4.2 from forky)
#      go      trixie minbase + golang-go (Go 1.24)
# 2. `buildah bud` of the targets api (published as ghcr.io/ckpt-dev/ckpt, which deploy/ runs
#    for the API and the operator with their own commands) and agent
#    (ghcr.io/ckpt-dev/ckpt-agent), with --build-arg pointing at those bases.
# 3. OCI archives of both (`ckpt.tar`, `ckpt-agent.tar`, each named with the exact reference
#    deploy/ uses) in .cache/images/<key>/, where <key> hashes every input: the Dockerfile,
#    .dockerignore, pyproject.toml, README.md (the wheel's readme), src/, cmd/ckpt-runc/ and
#    this folder (the base recipes). A later run with the same inputs only prints the folder;
#    `ctr -n k8s.io images import FILE` loads an archive into a node.
#
# Prints that folder on the last line of stdout; progress goes to stderr. Needs root, buildah
# and mmdebstrap (tools/system-deps.sh). Buildah's storage (vfs driver, no kernel overlay
# needed) lives in .cache/images/ too, so `make clean` removes every trace.
#
# Trusted CA: where the network presents its own CA (a TLS-inspecting egress), pip inside the
# build needs that bundle. CKPT_IMAGES_CA (default: /etc/ssl/certs/ca-certificates.crt when it
# exists) is passed as the build secret `ca`, mounted only for the RUN steps that download, so
# it never becomes part of a layer. CKPT_IMAGES_CA= (empty) builds without it.
set -euo pipefail
# Failures inside $(...) (the base images are built in one) stop the build too.
shopt -s inherit_errexit

say() { echo "images: $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache="$root/.cache/images"
mirror=${CKPT_IMAGES_MIRROR:-http://deb.debian.org/debian}
security_mirror=${CKPT_IMAGES_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
ca=${CKPT_IMAGES_CA-/etc/ssl/certs/ca-certificates.crt}

CKPT_IMAGE=ghcr.io/ckpt-dev/ckpt:0.1.0
AGENT_IMAGE=ghcr.io/ckpt-dev/ckpt-agent:0.1.0

for tool in buildah mmdebstrap flock; do
  command -v "$tool" >/dev/null || { say "$tool is missing: run tools/system-deps.sh"; exit 1; }
done
if [[ ! -f "$root/cmd/ckpt-runc/go.mod" ]]; then
  say "cmd/ckpt-runc/go.mod is missing: the agent image carries the ckpt-runc wrapper"
  exit 1
fi

bh() {
  buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver vfs "$@"
}

# ------------------------------------------------------------------------- context
# The build reads a snapshot of its inputs, taken under the lock, so that the archives hold
# exactly what the key below hashes even while the sources are being edited. Only what the
# .dockerignore lets into the build context, minus bytecode and editable-install metadata.
mkdir -p "$cache"
# One build at a time: a second caller (the cluster, a test) waits and then finds the result.
exec 9>"$cache/.lock"
flock 9

context="$cache/.context"
rm -rf "$context"
mkdir -p "$context"
trap 'rm -rf "$context"' EXIT
(
  cd "$root"
  tar -cf - --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    Dockerfile .dockerignore pyproject.toml README.md src cmd/ckpt-runc
) | tar -xf - -C "$context"

# ------------------------------------------------------------------------- cache key
# The snapshot's files and this folder (the base image recipes), by path and content.
inputs_key() {
  {
    (cd "$context" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    (cd "$here" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    sha256sum "$here/../lib/debian-base.sh" | cut -d' ' -f1
  } | sha256sum | cut -c1-16
}

key=$(inputs_key)
out="$cache/$key"
if [[ -f "$out/ckpt.tar" && -f "$out/ckpt-agent.tar" ]]; then
  say "up to date: $out"
  echo "$out"
  exit 0
fi
start=$(date +%s)

# ------------------------------------------------------------------------- base images
# shellcheck source=tools/lib/debian-base.sh
source "$here/../lib/debian-base.sh"

python_base=$(debian_base python bookworm ca-certificates python3 python3-venv python3-pip)
agent_base=$(debian_base agent trixie)
go_base=$(debian_base go trixie ca-certificates golang-go)

# ------------------------------------------------------------------------- targets
secret=()
if [[ -n "$ca" ]]; then
  secret=(--secret "id=ca,src=$ca")
fi

# What this machine's apt says of expired Release files: a mirror serving a frozen copy of the
# archive is configured with Acquire::Check-Valid-Until "false", and the agent image's apt
# (which adds the CRIU suite) must accept the same mirror.
# The dump is read whole before grep: `grep -q` stops at the first match, apt-config may then
# die of SIGPIPE, and under pipefail the match would read as no match (it did, at random).
check_valid_until=yes
apt_config=$(apt-config dump 2>/dev/null || true)
if grep -qi '^Acquire::Check-Valid-Until "false"' <<<"$apt_config"; then
  check_valid_until=no
fi

# target TARGET IMAGE
target() {
  local t0
  t0=$(date +%s)
  say "building target $1 as $2"
  bh bud --quiet --isolation chroot --network host --pull=never --layers \
    --build-arg "PYTHON_IMAGE=$python_base" \
    --build-arg "AGENT_BASE_IMAGE=$agent_base" \
    --build-arg "GO_IMAGE=$go_base" \
    --build-arg "DEBIAN_MIRROR=$mirror" \
    --build-arg "DEBIAN_CHECK_VALID_UNTIL=$check_valid_until" \
    "${secret[@]}" \
    --target "$1" --tag "$2" \
    --file "$context/Dockerfile" "$context" >&2
  say "target $1 built in $(($(date +%s) - t0))s"
}

target api "$CKPT_IMAGE"
target agent "$AGENT_IMAGE"

# Written beside the final folder and renamed, so a reader never sees half an archive.
partial="$cache/.partial-$key"
rm -rf "$partial"
mkdir -p "$partial"
bh push --quiet "$CKPT_IMAGE" "oci-archive:$partial/ckpt.tar:$CKPT_IMAGE" >&2
bh push --quiet "$AGENT_IMAGE" "oci-archive:$partial/ckpt-agent.tar:$AGENT_IMAGE" >&2
rm -rf "$out"
mv "$partial" "$out"
# Archives of older inputs: keep the previous set (a cluster may still be importing it), drop
# the rest; each set is a few hundred MB.
find "$cache" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended \
  -regex '.*/[0-9a-f]{16}' ! -name "$key" -printf '%T@ %p\n' \
  | sort -rn | tail -n +2 | cut -d' ' -f2- | xargs -r rm -rf
# The images of earlier builds stay in buildah's storage, untagged; under vfs each layer is a
# full copy of its root filesystem, and a day of rebuilds filled 42 GB. Dangling images go;
# the bases and this build's layer cache (parents of the tagged images) stay.
t0=$(date +%s)
if bh rmi --prune >/dev/null 2>&1; then
  say "old images pruned in $(($(date +%s) - t0))s"
else
  say "could not prune old images from $cache/storage (the build is fine; disk use grows)"
fi
say "images built in $(($(date +%s) - start))s: $out"
echo "$out"
