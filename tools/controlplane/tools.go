//go:build tools

// Package controlplane pins the local cluster's Kubernetes: kube-apiserver,
// kube-controller-manager, kube-scheduler, kube-proxy and kubelet from k8s.io/kubernetes, and
// etcd from go.etcd.io/etcd/server/v3. The build script compiles them from this module so the
// versions live in go.mod and go.sum.
package controlplane

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
