#!/usr/bin/env bash
# The GPU path on a machine with an NVIDIA GPU (driver >= 570, root): a CUDA process holding a
# known pattern in GPU memory is checkpointed through the agent's process backend + gpu.py,
# restored, and checked (pattern intact, counter running). Usage: tools/gpu-check.sh [MIB]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MIB=${1:-1024}
CRIU=$("$ROOT/tools/criu/install.sh")
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || PY=python3
exec "$PY" "$ROOT/tools/gpu/check.py" --mib "$MIB" --criu "$CRIU"
