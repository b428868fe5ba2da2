#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (the S3 server of the storage tests and the local cluster) from the
# version pinned in go.mod, once, into a cache keyed by go.mod, go.sum and the Go version; later
# runs reuse it. Prints the path of the binary. CKPT_CACHE overrides the cache root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${CKPT_CACHE:-$root/.cache}
key=$(cat "$here/go.mod" "$here/go.sum" <(go env GOVERSION) | sha256sum | cut -c1-16)
out="$cache/seaweedfs/$key"
if [[ -x "$out/weed" ]]; then
  echo "$out/weed"
  exit 0
fi
mkdir -p "$out"
cd "$here"
start=$(date +%s)
echo "building weed into $out (first time only; several minutes)" >&2
# CGO_ENABLED=0: a static binary with no host library needs; -p 2: weed pulls in hundreds of
# packages (cloud SDKs for its remote tiers), and two parallel compiles keep a 2-core machine usable.
CGO_ENABLED=0 go build -p 2 -trimpath -ldflags='-s -w' -o "$out/.weed.tmp" github.com/seaweedfs/seaweedfs/weed
mv "$out/.weed.tmp" "$out/weed"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$out/weed"
