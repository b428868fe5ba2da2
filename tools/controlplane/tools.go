//go:build tools

// Package controlplane pins the test control plane: kube-apiserver from
// k8s.io/kubernetes and etcd from go.etcd.io/etcd/server/v3. The build script
// compiles both from this module so the versions live in go.mod and go.sum.
package controlplane

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
