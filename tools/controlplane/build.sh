#!/usr/bin/env bash
# Builds the local cluster's Kubernetes binaries from the versions pinned in go.mod: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and kubelet, once, into a
# cache keyed by go.mod, go.sum, the Go version and this script; later runs reuse it. Prints
# the folder holding the binaries. CKPT_CACHE overrides the cache root.
#
#   build.sh                    all six (the local cluster)
#   build.sh etcd kube-apiserver  only those (the envtest-style control plane of the tests)
#
# Concurrent callers (several test sessions on a fresh machine) wait on one lock instead of
# compiling the same multi-GiB link side by side on two cores.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${CKPT_CACHE:-$root/.cache}
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" <(go env GOVERSION) | sha256sum | cut -c1-16)
out="$cache/controlplane/$key"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet)
if (($# > 0)); then
    binaries=("$@")
fi

complete() {
    local name
    for name in "${binaries[@]}"; do [[ -x "$out/$name" ]] || return 1; done
}

if complete; then
    echo "$out"
    exit 0
fi
mkdir -p "$out"
exec 9>"$cache/controlplane/.build.lock"
cd "$here"
start=$(date +%s)
version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
major=${version#v}
minor=${major#*.}
# Without these stamps every component reports v0.0.0-master, and so do the Nodes.
stamp="-X k8s.io/component-base/version.gitVersion=$version"
stamp+=" -X k8s.io/component-base/version.gitMajor=${major%%.*}"
stamp+=" -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
stamp+=" -X k8s.io/component-base/version.gitTreeState=clean"
for name in "${binaries[@]}"; do
    # One binary at a time under the lock, so a caller that needs only etcd and the apiserver
    # never waits for another's kubelet.
    flock 9
    if [[ -x "$out/$name" ]]; then
        flock -u 9
        continue
    fi
    echo "building $name into $out (first time only; several minutes)" >&2
    if [[ $name == etcd ]]; then
        package=go.etcd.io/etcd/server/v3
        ldflags="-s -w"
    else
        package=k8s.io/kubernetes/cmd/$name
        ldflags="-s -w $stamp"
    fi
    # -p 2: the apiserver link needs a few GiB; two parallel compiles keep a 2-core machine
    # responsive. CGO_ENABLED=0: static binaries, which the nodes' namespaces run as they are.
    CGO_ENABLED=0 go build -p 2 -trimpath -ldflags="$ldflags" -o "$out/.$name.tmp" "$package"
    mv "$out/.$name.tmp" "$out/$name"
    flock -u 9
done
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$out"
