// Command pause is the sandbox ("pause") container of the local cluster's pods: it holds the
// pod's namespaces open, reaps the zombies of processes that get reparented to it (it is
// PID 1 of the pod when the pod shares its PID namespace), and exits on SIGTERM or SIGINT.
// The cluster has no registry to pull registry.k8s.io/pause from, so this static binary is
// packed into a local OCI image and imported into every node's containerd.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every exited child without blocking; one SIGCHLD may stand for several.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
