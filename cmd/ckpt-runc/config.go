package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// config is the wrapper's configuration. containerd starts the runtime binary with fixed
// arguments, so the wrapper takes no flags of its own: it reads `ckpt-runc.conf` next to
// its binary (or the file CKPT_RUNC_CONFIG names), then the CKPT_RUNC_* environment
// variables, which win over the file.
type config struct {
	Runtime        string        // runtime = runc; the next runtime (e.g. nvidia-container-runtime)
	StagingRoot    string        // staging_root = /var/lib/ckpt/restores
	StateDir       string        // state_dir = /run/ckpt-runc
	GPUHook        string        // gpu_hook = <staging_root>/../bin/ckpt-cuda-restore
	GPUHookTimeout time.Duration // gpu_hook_timeout = 5m
	CRIU           string        // criu = (empty: the runtime's default, `criu` on PATH)
	CgroupsMode    string        // manage_cgroups_mode = (empty: by the runtime's version)
	KubeletRoot    string        // kubelet_root = /var/lib/kubelet; the kubelet's --root-dir
}

const configFileName = "ckpt-runc.conf"

var configKeys = map[string]string{
	"runtime":             "CKPT_RUNC_RUNTIME",
	"staging_root":        "CKPT_RUNC_STAGING_ROOT",
	"state_dir":           "CKPT_RUNC_STATE_DIR",
	"gpu_hook":            "CKPT_RUNC_GPU_HOOK",
	"gpu_hook_timeout":    "CKPT_RUNC_GPU_HOOK_TIMEOUT",
	"criu":                "CKPT_RUNC_CRIU",
	"manage_cgroups_mode": "CKPT_RUNC_MANAGE_CGROUPS_MODE",
	"kubelet_root":        "CKPT_RUNC_KUBELET_ROOT",
}

func configFilePath() string {
	if p := os.Getenv("CKPT_RUNC_CONFIG"); p != "" {
		return p
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(exe), configFileName)
}

// loadConfig reads the file (absent is fine) and the environment. An unknown key or a bad
// value is an error: a typo must not silently send every container to the wrong runtime.
func loadConfig() (config, error) {
	values := map[string]string{}
	if p := configFilePath(); p != "" {
		if err := readConfigFile(p, values); err != nil {
			return config{}, err
		}
	}
	for key, env := range configKeys {
		if v, ok := os.LookupEnv(env); ok && v != "" {
			values[key] = v
		}
	}
	cfg := config{
		Runtime:        "runc",
		StagingRoot:    "/var/lib/ckpt/restores",
		StateDir:       "/run/ckpt-runc",
		GPUHookTimeout: 5 * time.Minute,
		KubeletRoot:    "/var/lib/kubelet",
	}
	set := map[string]*string{
		"runtime": &cfg.Runtime, "staging_root": &cfg.StagingRoot, "state_dir": &cfg.StateDir,
		"gpu_hook": &cfg.GPUHook, "criu": &cfg.CRIU, "manage_cgroups_mode": &cfg.CgroupsMode,
		"kubelet_root": &cfg.KubeletRoot,
	}
	for key, v := range values {
		if p, ok := set[key]; ok {
			*p = v
		}
	}
	if v := values["gpu_hook_timeout"]; v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return config{}, fmt.Errorf("gpu_hook_timeout %q is not a positive duration like 90s or 5m", v)
		}
		cfg.GPUHookTimeout = d
	}
	if !filepath.IsAbs(cfg.StagingRoot) || !filepath.IsAbs(cfg.StateDir) || !filepath.IsAbs(cfg.KubeletRoot) {
		return config{}, fmt.Errorf("staging_root %q, state_dir %q and kubelet_root %q must be absolute paths",
			cfg.StagingRoot, cfg.StateDir, cfg.KubeletRoot)
	}
	cfg.StagingRoot = filepath.Clean(cfg.StagingRoot)
	cfg.KubeletRoot = filepath.Clean(cfg.KubeletRoot)
	if cfg.GPUHook == "" {
		cfg.GPUHook = filepath.Join(filepath.Dir(cfg.StagingRoot), "bin", "ckpt-cuda-restore")
	}
	switch cfg.CgroupsMode {
	case "", "soft", "full", "strict", "ignore":
	default:
		return config{}, fmt.Errorf("manage_cgroups_mode %q is not one of soft, full, strict, ignore", cfg.CgroupsMode)
	}
	return cfg, nil
}

func readConfigFile(p string, values map[string]string) error {
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if _, known := configKeys[key]; !ok || !known {
			return fmt.Errorf("config file %s line %d: want `key = value` with key one of runtime, staging_root, state_dir, gpu_hook, gpu_hook_timeout, criu, manage_cgroups_mode, kubelet_root; got %q", p, n, line)
		}
		values[key] = strings.TrimSpace(value)
	}
	return sc.Err()
}

// resolveRuntime finds the next runtime's executable and refuses the wrapper itself (an
// installation that put ckpt-runc on PATH as `runc` would otherwise exec itself forever).
func resolveRuntime(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("the next runtime %q: %w", name, err)
	}
	var self, next syscall.Stat_t
	if syscall.Stat("/proc/self/exe", &self) == nil && syscall.Stat(p, &next) == nil &&
		self.Dev == next.Dev && self.Ino == next.Ino {
		return "", fmt.Errorf("the next runtime %q is ckpt-runc itself: set runtime in %s or CKPT_RUNC_RUNTIME", p, configFileName)
	}
	return p, nil
}
