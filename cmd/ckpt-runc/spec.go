package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Annotations of the container's config.json that the wrapper reads. containerd's CRI
// plugin writes the io.kubernetes.cri.* ones into every container it creates; it copies a
// pod annotation only when the runtime handler's pod_annotations allowlist matches it
// (`ckpt.dev/*` for handler `ckpt`).
const (
	annRestore           = "ckpt.dev/restore"
	annContainerType     = "io.kubernetes.cri.container-type"
	annContainerName     = "io.kubernetes.cri.container-name"
	annSandboxName       = "io.kubernetes.cri.sandbox-name"
	annSandboxNamespace  = "io.kubernetes.cri.sandbox-namespace"
	annSandboxUID        = "io.kubernetes.cri.sandbox-uid"
	annCRIUConfig        = "org.criu.config" // runc hands this file to CRIU as its configuration
	containerTypeApp     = "container"
	containerTypeSandbox = "sandbox"
)

// bundleSpec is the part of the OCI config.json the wrapper needs.
type bundleSpec struct {
	Root *struct {
		Path string `json:"path"`
	} `json:"root"`
	Annotations map[string]string `json:"annotations"`
	Mounts      []struct {
		Destination string `json:"destination"`
		Source      string `json:"source"`
	} `json:"mounts"`
}

func readSpec(bundle string) (bundleSpec, error) {
	var spec bundleSpec
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return spec, err
	}
	if err := json.Unmarshal(data, &spec); err != nil {
		return spec, fmt.Errorf("%s/config.json: %w", bundle, err)
	}
	return spec, nil
}

// rootfsPath is root.path of the spec, relative to the bundle unless absolute.
func (s bundleSpec) rootfsPath(bundle string) (string, error) {
	if s.Root == nil || s.Root.Path == "" {
		return "", fmt.Errorf("%s/config.json has no root.path", bundle)
	}
	if filepath.IsAbs(s.Root.Path) {
		return s.Root.Path, nil
	}
	return filepath.Join(bundle, s.Root.Path), nil
}

// setAnnotation rewrites the bundle's config.json with one annotation set, leaving every
// other member as containerd wrote it (members are re-encoded from their raw bytes), and
// replaces the file by rename so that a reader never sees half of it.
func setAnnotation(bundle, key, value string) error {
	p := filepath.Join(bundle, "config.json")
	info, err := os.Stat(p)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	annotations := map[string]string{}
	if raw, ok := doc["annotations"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &annotations); err != nil {
			return fmt.Errorf("%s annotations: %w", p, err)
		}
	}
	annotations[key] = value
	if doc["annotations"], err = json.Marshal(annotations); err != nil {
		return err
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	tmp := p + ".ckpt-runc.tmp"
	if err := os.WriteFile(tmp, out, info.Mode().Perm()); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
