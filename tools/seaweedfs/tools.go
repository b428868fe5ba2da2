//go:build tools

// Package seaweedfs pins the S3 server used by the storage tests and the local cluster:
// SeaweedFS's `weed` command from github.com/seaweedfs/seaweedfs. The build script compiles it
// from this module so the version lives in go.mod and go.sum.
package seaweedfs

import (
	_ "github.com/seaweedfs/seaweedfs/weed"
)
