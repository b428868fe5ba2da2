//go:build linux

// Command ckpt-runc is the OCI runtime that containerd's runc shim runs for the `ckpt`
// runtime handler. It turns `create` of a container whose Pod has a staged restore into
// `runc restore --detach`, makes the following `start` a no-op, and hands every other
// invocation to the next runtime unchanged (same argv, environment and stdio, by exec).
// See README.md for the contract with the node agent.
package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

func main() {
	os.Exit(run(os.Args))
}

func run(argv []string) int {
	inv := parseInvocation(argv[1:])
	cfg, err := loadConfig()
	if err != nil {
		logLine(inv, "error", "ckpt-runc: "+err.Error())
		return 1
	}
	runtime, err := resolveRuntime(cfg.Runtime)
	if err != nil {
		logLine(inv, "error", "ckpt-runc: "+err.Error())
		return 1
	}
	switch inv.command {
	case "create":
		if status, handled := maybeRestore(cfg, runtime, inv); handled {
			return status
		}
	case "start":
		if isRestored(cfg, containerID(inv.cmdArgs)) {
			return 0 // runc restore --detach left the container running
		}
	case "delete":
		if id := containerID(inv.cmdArgs); plainName(id) {
			if err := os.Remove(recordPath(cfg, id)); err != nil && !errors.Is(err, os.ErrNotExist) {
				logLine(inv, "warning", fmt.Sprintf("ckpt-runc: remove the restore record of %s: %v", id, err))
			}
		}
	}
	return passThrough(inv, runtime, argv)
}

// maybeRestore handles `create` of a container whose config.json asks for a restore.
// handled is false when the create must go to the runtime unchanged: no restore asked (or
// no config.json to tell, which runc reports itself), the Pod's sandbox (never restored:
// the restored containers join the new sandbox's namespaces), or a container that the
// Pod's checkpoint did not include (once the emptyDirs it mounts hold the staged data).
func maybeRestore(cfg config, runtime string, inv invocation) (status int, handled bool) {
	ca, parseErr := parseCreate(inv.cmdArgs)
	spec, err := readSpec(ca.bundle)
	if err != nil || spec.Annotations[annRestore] == "" {
		return 0, false
	}
	switch t := spec.Annotations[annContainerType]; t {
	case containerTypeSandbox:
		return 0, false
	case containerTypeApp:
	default:
		logLine(inv, "error", fmt.Sprintf("ckpt-runc: restore %s: container type %q (annotation %s) is not %q; refusing to restore it",
			spec.Annotations[annRestore], t, annContainerType, containerTypeApp))
		return 1, true
	}
	if parseErr != nil {
		logLine(inv, "error", fmt.Sprintf("ckpt-runc: restore %s: %v", spec.Annotations[annRestore], parseErr))
		return 1, true
	}
	staged, err := openStagedRestore(cfg, spec.Annotations)
	if err != nil {
		logLine(inv, "error", "ckpt-runc: "+err.Error())
		return 1, true
	}
	defer staged.close()
	// The Pod's emptyDirs first, for every container that mounts one (restored or not):
	// the data belongs to the Pod, and whichever container is created first must see it.
	if err := staged.applyEmptyDirs(cfg, spec, ca.id); err != nil {
		logLine(inv, "error", err.Error())
		return 1, true
	}
	if !staged.inCheckpoint {
		logLine(inv, "info", fmt.Sprintf("ckpt-runc: restore %s has no container %s; creating it fresh",
			spec.Annotations[annRestore], spec.Annotations[annContainerName]))
		return 0, false
	}
	status, err = restoreCreate(cfg, runtime, inv, ca, spec, staged)
	if err != nil {
		logLine(inv, "error", err.Error())
	}
	return status, true
}

// passThrough replaces this process with the runtime: no extra process, the same
// arguments, environment and descriptors.
func passThrough(inv invocation, runtime string, argv []string) int {
	args := append([]string{runtime}, argv[1:]...)
	err := syscall.Exec(runtime, args, os.Environ())
	logLine(inv, "error", fmt.Sprintf("ckpt-runc: exec %s: %v", runtime, err))
	return 1
}
