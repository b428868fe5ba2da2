#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver and etcd) from the versions pinned in go.mod,
# once, into a cache keyed by go.mod, go.sum and the Go version; later runs reuse it.
# Prints the folder holding the binaries. CKPT_CACHE overrides the cache root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${CKPT_CACHE:-$root/.cache}
key=$(cat "$here/go.mod" "$here/go.sum" <(go env GOVERSION) | sha256sum | cut -c1-16)
out="$cache/controlplane/$key"
if [[ -x "$out/kube-apiserver" && -x "$out/etcd" ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
cd "$here"
start=$(date +%s)
echo "building kube-apiserver and etcd into $out (first time only; several minutes)" >&2
# -p 2: the apiserver link needs a few GiB; two parallel compiles keep a 2-core machine responsive.
CGO_ENABLED=0 go build -p 2 -trimpath -ldflags='-s -w' -o "$out/.etcd.tmp" go.etcd.io/etcd/server/v3
CGO_ENABLED=0 go build -p 2 -trimpath -ldflags='-s -w' -o "$out/.kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv "$out/.etcd.tmp" "$out/etcd"
mv "$out/.kube-apiserver.tmp" "$out/kube-apiserver"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$out"
