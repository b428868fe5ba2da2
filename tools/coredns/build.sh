#!/usr/bin/env bash
# Builds CoreDNS from the version pinned in go.mod (cached; see tools/lib/gobuild.sh; about
# 3 minutes the first time). Prints the folder holding the binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/lib/gobuild.sh
source "$here/../lib/gobuild.sh"
gobuild coredns "$here" coredns=github.com/coredns/coredns
