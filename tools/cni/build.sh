#!/usr/bin/env bash
# Builds the CNI plugins the local nodes use (bridge, host-local, loopback, portmap) from the
# version pinned in go.mod (cached; see tools/lib/gobuild.sh). Prints the folder holding them,
# which is what a node mounts at /opt/cni/bin.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/lib/gobuild.sh
source "$here/../lib/gobuild.sh"
version=$(pinned_version "$here" github.com/containernetworking/plugins)
GOBUILD_LDFLAGS="-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$version" \
    gobuild cni "$here" \
    bridge=github.com/containernetworking/plugins/plugins/main/bridge \
    loopback=github.com/containernetworking/plugins/plugins/main/loopback \
    host-local=github.com/containernetworking/plugins/plugins/ipam/host-local \
    portmap=github.com/containernetworking/plugins/plugins/meta/portmap
