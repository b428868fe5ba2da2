//go:build tools

// Package critools pins crictl, the CRI client used to inspect a local node's containerd.
// It lives apart from tools/containerd because the two dependency graphs pin different
// versions of the CRI API and gRPC.
package critools

import (
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
