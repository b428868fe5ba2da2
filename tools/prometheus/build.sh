#!/usr/bin/env bash
# Builds `prometheus` and `promtool` from the version pinned in go.mod (cached; see
# tools/lib/gobuild.sh). Prints the folder holding both binaries.
#
# Only what ckpt's monitoring needs goes in: the HTTP API without the web UI's assets (no
# `builtinassets` tag: the UI answers with an error, the API and /metrics work), and of the
# service discoveries only kubernetes_sd_configs and the always-present file and http
# (`remove_all_sd` drops the cloud SDKs, most of the compile time on a 2-core machine).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/lib/gobuild.sh
source "$here/../lib/gobuild.sh"
module=github.com/prometheus/prometheus
# The Go module's v0.3XY.Z is Prometheus 3.XY.Z; `prometheus --version` says so.
pinned=$(pinned_version "$here" "$module")
minor_patch=${pinned#v0.3}
version="3.$((10#${minor_patch%%.*})).${minor_patch#*.}"
export GOBUILD_LDFLAGS="-X github.com/prometheus/common/version.Version=$version"
export GOBUILD_TAGS=remove_all_sd,enable_kubernetes_sd
gobuild prometheus "$here" \
    prometheus=$module/cmd/prometheus \
    promtool=$module/cmd/promtool
