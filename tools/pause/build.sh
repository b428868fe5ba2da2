#!/usr/bin/env bash
# Builds the local pause binary (main.go here; cached, see tools/lib/gobuild.sh). Prints the
# folder holding it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/lib/gobuild.sh
source "$here/../lib/gobuild.sh"
gobuild pause "$here" pause=github.com/ckpt-dev/ckpt/tools/pause
