#!/usr/bin/env bash
# Builds containerd, containerd-shim-runc-v2 and ctr from the version pinned in go.mod (cached;
# see tools/lib/gobuild.sh). Prints the folder holding the binaries.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/lib/gobuild.sh
source "$here/../lib/gobuild.sh"
version=$(pinned_version "$here" github.com/containerd/containerd/v2)
# Without the stamp containerd reports "+unknown" as its version to the kubelet and to ctr.
GOBUILD_LDFLAGS="-X github.com/containerd/containerd/v2/version.Version=$version" \
    gobuild containerd "$here" \
    containerd=github.com/containerd/containerd/v2/cmd/containerd \
    containerd-shim-runc-v2=github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    ctr=github.com/containerd/containerd/v2/cmd/ctr
