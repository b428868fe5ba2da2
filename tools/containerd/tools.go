//go:build tools

// Package containerd pins each local node's container runtime: containerd, its runc shim
// (containerd-shim-runc-v2) and the ctr client. tools/containerd/build.sh compiles them from
// this module so the versions live in go.mod and go.sum.
package containerd

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
