#!/usr/bin/env bash
# Builds crictl from the cri-tools version pinned in go.mod (cached; see tools/lib/gobuild.sh).
# Prints the folder holding the binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/lib/gobuild.sh
source "$here/../lib/gobuild.sh"
version=$(pinned_version "$here" sigs.k8s.io/cri-tools)
GOBUILD_LDFLAGS="-X sigs.k8s.io/cri-tools/pkg/version.Version=$version" \
    gobuild cri-tools "$here" crictl=sigs.k8s.io/cri-tools/cmd/crictl
