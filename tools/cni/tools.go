//go:build tools

// Package cni pins the CNI plugins a local node's containerd runs for pod networking:
// bridge and host-local (one bridge and pod subnet per node), loopback, and portmap
// (hostPort). tools/cni/build.sh compiles them from this module.
package cni

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
