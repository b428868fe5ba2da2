//go:build tools

// Package coredns pins CoreDNS, the local cluster's DNS server (run as a Deployment in
// kube-system from a local image that tools/coredns/build.sh's binary goes into).
package coredns

import (
	_ "github.com/coredns/coredns"
)
