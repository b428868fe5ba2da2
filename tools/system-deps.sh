#!/usr/bin/env bash
# Installs the Debian packages that the tests and the demo need, only those that are missing:
# runc, iptables (CRIU locks the container network with iptables-restore), busybox-static
# (the test containers' rootfs), openssl (keys of the test control plane), PostgreSQL
# (the checkpoints API is tested against it), and buildah + mmdebstrap (the container images,
# built from Debian packages without a Docker engine: tools/images/build.sh), shellcheck
# (`make lint`), and a JDK where no javac is on PATH (tools/apps/build.sh compiles the JVM
# application the tests checkpoint). Needs root;
# prints nothing when all are there.
set -euo pipefail
packages=(runc iptables busybox-static openssl postgresql buildah mmdebstrap shellcheck)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
command -v javac >/dev/null || missing+=(default-jdk-headless)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]}; run: sudo $0" >&2
    exit 1
  fi
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The postgresql package would start a system cluster; the tests run their own, so keep
  # the service from starting during the install.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
