//go:build tools

// Package prometheus pins the Prometheus server and promtool that the monitoring tests run
// (tests/monitoring): promtool checks and unit-tests the alert rules and the scrape config,
// and the cluster test scrapes ckpt with the real server. tools/prometheus/build.sh compiles
// both from this module so the version lives in go.mod and go.sum.
package prometheus

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
