//go:build linux

package main

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const otherPodUID = "9e0d4c2b-0000-4000-8000-000000000002"

// emptyDirPath is where the kubelet keeps volume vol of the Pod with uid.
func (h *harness) emptyDirPath(uid, vol string) string {
	return filepath.Join(h.kubelet, "pods", uid, "volumes", "kubernetes.io~empty-dir", vol)
}

// writeConfigWithMounts writes config.json with the annotations and bind mounts
// (destination -> source), the way containerd writes an emptyDir mount.
func (h *harness) writeConfigWithMounts(annotations map[string]string, mounts map[string]string) {
	h.t.Helper()
	var ms []map[string]any
	for _, dst := range slices.Sorted(maps.Keys(mounts)) {
		ms = append(ms, map[string]any{
			"destination": dst, "type": "bind", "source": mounts[dst],
			"options": []string{"rbind", "rprivate", "rw"},
		})
	}
	spec := map[string]any{
		"ociVersion":  "1.0.2",
		"process":     map[string]any{"args": []string{"/bin/sh"}, "cwd": "/"},
		"root":        map[string]any{"path": "rootfs"},
		"mounts":      ms,
		"annotations": annotations,
	}
	data, err := json.Marshal(spec)
	must(h.t, err)
	must(h.t, os.WriteFile(filepath.Join(h.bundle, "config.json"), data, 0o644))
}

// stageWithEmptyDir stages restore rst-1 with the given containers and an emptyDir
// "cache" holding a file, a nested file and a link; it makes the new Pod's empty folder.
func (h *harness) stageWithEmptyDir(containers ...string) (dir string) {
	h.t.Helper()
	rf := defaultRestoreFile()
	listed := map[string]any{}
	for _, c := range containers {
		listed[c] = map[string]any{"images": "containers/" + c + "/images"}
	}
	rf["containers"] = listed
	rf["emptyDirs"] = map[string]any{"cache": "volumes/cache"}
	dir = h.stage("rst-1", rf, containers...)
	vol := filepath.Join(dir, "volumes", "cache")
	writeFile(h.t, filepath.Join(vol, "data.txt"), "from the checkpoint\n", 0o640)
	writeFile(h.t, filepath.Join(vol, "sub", "dir", "file"), "nested\n", 0o600)
	must(h.t, os.Symlink("/etc/passwd", filepath.Join(vol, "link")))
	setTimes(h.t, filepath.Join(vol, "data.txt"), time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC))
	must(h.t, os.MkdirAll(h.emptyDirPath(appAnnotations()[annSandboxUID], "cache"), 0o777))
	return dir
}

func (h *harness) podCache() string {
	return h.emptyDirPath(appAnnotations()[annSandboxUID], "cache")
}

func readMarker(t *testing.T, p string) appliedMarker {
	t.Helper()
	data, err := os.ReadFile(p)
	must(t, err)
	var m appliedMarker
	must(t, json.Unmarshal(data, &m))
	return m
}

func TestEmptyDirIsCopiedOnceForTwoContainers(t *testing.T) {
	h := newHarness(t)
	dir := h.stageWithEmptyDir("app", "side")
	cache := h.podCache()
	mounts := map[string]string{"/cache": cache}

	h.writeConfigWithMounts(appAnnotations(), mounts)
	if rc, _ := h.wrapper(nil, h.createArgs("c-app")...); rc != 0 {
		t.Fatalf("create app: exit %d: %s", rc, h.lastLogError())
	}
	data, err := os.ReadFile(filepath.Join(cache, "data.txt"))
	if err != nil || string(data) != "from the checkpoint\n" {
		t.Fatalf("data.txt = %q, %v", data, err)
	}
	info, err := os.Lstat(filepath.Join(cache, "data.txt"))
	must(t, err)
	if info.Mode() != 0o640 || !info.ModTime().Equal(time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)) {
		t.Errorf("data.txt mode %v mtime %v", info.Mode(), info.ModTime())
	}
	if data, err := os.ReadFile(filepath.Join(cache, "sub", "dir", "file")); err != nil || string(data) != "nested\n" {
		t.Errorf("nested file = %q, %v", data, err)
	}
	if target, err := os.Readlink(filepath.Join(cache, "link")); err != nil || target != "/etc/passwd" {
		t.Errorf("link = %q, %v (want it copied as a link)", target, err)
	}
	marker := filepath.Join(dir, "volumes", "cache.applied")
	if m := readMarker(t, marker); m.ContainerID != "c-app" || m.Container != "app" || m.Error != "" || m.Time == "" {
		t.Errorf("marker %+v", m)
	}

	// The restored app runs and changes the shared volume before the second container.
	must(t, os.WriteFile(filepath.Join(cache, "data.txt"), []byte("written after the restore\n"), 0o640))
	must(t, os.Remove(filepath.Join(cache, "sub", "dir", "file")))

	side := appAnnotations()
	side[annContainerName] = "side"
	h.writeConfigWithMounts(side, mounts)
	if rc, _ := h.wrapper(nil, h.createArgs("c-side")...); rc != 0 {
		t.Fatalf("create side: exit %d: %s", rc, h.lastLogError())
	}
	if data, _ := os.ReadFile(filepath.Join(cache, "data.txt")); string(data) != "written after the restore\n" {
		t.Errorf("the second create copied again: data.txt = %q", data)
	}
	if _, err := os.Lstat(filepath.Join(cache, "sub", "dir", "file")); !os.IsNotExist(err) {
		t.Errorf("the second create brought back a file the app removed: %v", err)
	}
	if m := readMarker(t, marker); m.ContainerID != "c-app" {
		t.Errorf("marker rewritten by the second create: %+v", m)
	}
	calls := h.commandCalls()
	if len(calls) != 2 || !slices.Contains(calls[0].args, "restore") || !slices.Contains(calls[1].args, "restore") {
		t.Fatalf("want both containers restored, got %d calls", len(calls))
	}
}

func TestEmptyDirReachesAContainerOutsideTheCheckpointAndAFailedCopyIsRetried(t *testing.T) {
	h := newHarness(t)
	dir := h.stageWithEmptyDir("app")
	marker := filepath.Join(dir, "volumes", "cache.applied")
	// An earlier create failed half way: the next one must copy, not trust the marker.
	must(t, os.WriteFile(marker, []byte(`{"time":"2025-01-01T00:00:00Z","containerId":"x","container":"app","error":"disk full"}`+"\n"), 0o644))
	ann := appAnnotations()
	ann[annContainerName] = "init-cache"
	h.writeConfigWithMounts(ann, map[string]string{"/cache": h.podCache()})
	args := h.createArgs("c-init")
	if rc, _ := h.wrapper(nil, args...); rc != 0 {
		t.Fatalf("exit %d: %s", rc, h.lastLogError())
	}
	if calls := h.commandCalls(); len(calls) != 1 || !slices.Equal(calls[0].args, args) {
		t.Fatalf("want a plain create, got %+v", calls)
	}
	if data, err := os.ReadFile(filepath.Join(h.podCache(), "data.txt")); err != nil || string(data) != "from the checkpoint\n" {
		t.Fatalf("data.txt = %q, %v", data, err)
	}
	if m := readMarker(t, marker); m.ContainerID != "c-init" || m.Error != "" {
		t.Errorf("marker %+v", m)
	}
}

// refuse runs a create that must fail before the runtime is called, with wantErr logged,
// the Pod's volume and the place outside it untouched, and no marker claimed.
func (h *harness) refuse(dir, wantErr string, untouched ...string) {
	h.t.Helper()
	rc, _ := h.wrapper(nil, h.createArgs("c1")...)
	if rc == 0 {
		h.t.Fatal("create succeeded")
	}
	if calls := h.commandCalls(); len(calls) != 0 {
		h.t.Fatalf("the runtime was called: %q", calls[0].args)
	}
	if msg := h.lastLogError(); !strings.Contains(msg, wantErr) || !strings.HasPrefix(msg, "ckpt-runc: restore rst-1 container app") {
		h.t.Fatalf("logged error %q, want it to contain %q", msg, wantErr)
	}
	for _, p := range untouched {
		entries, err := os.ReadDir(p)
		must(h.t, err)
		if len(entries) != 0 {
			h.t.Errorf("%s got %d entries", p, len(entries))
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "volumes", "cache.applied")); !os.IsNotExist(err) {
		h.t.Errorf("marker claimed by a refused create: %v", err)
	}
}

func TestEmptyDirMountOutsideThePodsFolderIsRefused(t *testing.T) {
	uid := appAnnotations()[annSandboxUID]
	for name, source := range map[string]func(h *harness) string{
		"another pod's volume": func(h *harness) string { return h.emptyDirPath(otherPodUID, "cache") },
		"outside the kubelet root": func(h *harness) string {
			return filepath.Join(h.dir, "elsewhere", "volumes", "kubernetes.io~empty-dir", "cache")
		},
		"climbing out with ..": func(h *harness) string {
			return h.emptyDirPath(uid, "cache") + "/../../../../" + otherPodUID + "/volumes/kubernetes.io~empty-dir/cache"
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			dir := h.stageWithEmptyDir("app")
			src := source(h)
			must(t, os.MkdirAll(filepath.Clean(src), 0o777))
			h.writeConfigWithMounts(appAnnotations(), map[string]string{"/cache": src})
			h.refuse(dir, "not from this Pod's own folder", filepath.Clean(src), h.podCache())
		})
	}
	t.Run("no pod uid", func(t *testing.T) {
		h := newHarness(t)
		dir := h.stageWithEmptyDir("app")
		ann := appAnnotations()
		delete(ann, annSandboxUID)
		h.writeConfigWithMounts(ann, map[string]string{"/cache": h.podCache()})
		h.refuse(dir, "no usable pod uid", h.podCache())
	})
}

func TestEmptyDirSymlinkEscapesAreRefused(t *testing.T) {
	t.Run("the Pod's volume folder is a link", func(t *testing.T) {
		h := newHarness(t)
		dir := h.stageWithEmptyDir("app")
		outside := filepath.Join(h.dir, "outside")
		must(t, os.MkdirAll(outside, 0o755))
		must(t, os.Remove(h.podCache()))
		must(t, os.Symlink(outside, h.podCache()))
		h.writeConfigWithMounts(appAnnotations(), map[string]string{"/cache": h.podCache()})
		h.refuse(dir, "the Pod's folder pods/", outside)
	})
	t.Run("the Pod's folder is a link", func(t *testing.T) {
		h := newHarness(t)
		dir := h.stageWithEmptyDir("app")
		uid := appAnnotations()[annSandboxUID]
		outside := filepath.Join(h.dir, "outside-pod")
		must(t, os.Rename(filepath.Join(h.kubelet, "pods", uid), outside))
		must(t, os.Symlink(outside, filepath.Join(h.kubelet, "pods", uid)))
		h.writeConfigWithMounts(appAnnotations(), map[string]string{"/cache": h.podCache()})
		h.refuse(dir, "the Pod's folder pods/", filepath.Join(outside, "volumes", "kubernetes.io~empty-dir", "cache"))
	})
	t.Run("the staged tree is a link", func(t *testing.T) {
		h := newHarness(t)
		dir := h.stageWithEmptyDir("app")
		elsewhere := filepath.Join(h.dir, "host-secrets")
		writeFile(t, filepath.Join(elsewhere, "key"), "secret", 0o600)
		must(t, os.RemoveAll(filepath.Join(dir, "volumes", "cache")))
		must(t, os.Symlink(elsewhere, filepath.Join(dir, "volumes", "cache")))
		h.writeConfigWithMounts(appAnnotations(), map[string]string{"/cache": h.podCache()})
		h.refuse(dir, "staged tree volumes/cache", h.podCache())
	})
	t.Run("links inside the Pod's volume are replaced, not followed", func(t *testing.T) {
		h := newHarness(t)
		h.stageWithEmptyDir("app")
		outside := filepath.Join(h.dir, "outside")
		writeFile(t, filepath.Join(outside, "victim"), "host file\n", 0o644)
		// Left by a container created earlier: links where the staged tree has entries.
		must(t, os.Symlink(outside, filepath.Join(h.podCache(), "sub")))
		must(t, os.Symlink(filepath.Join(outside, "victim"), filepath.Join(h.podCache(), "data.txt")))
		h.writeConfigWithMounts(appAnnotations(), map[string]string{"/cache": h.podCache()})
		if rc, _ := h.wrapper(nil, h.createArgs("c1")...); rc != 0 {
			t.Fatalf("exit %d: %s", rc, h.lastLogError())
		}
		if data, _ := os.ReadFile(filepath.Join(outside, "victim")); string(data) != "host file\n" {
			t.Errorf("a file outside the volume was written through a link: %q", data)
		}
		entries, err := os.ReadDir(outside)
		must(t, err)
		if len(entries) != 1 {
			t.Errorf("the copy created entries outside the volume: %v", entries)
		}
		for _, rel := range []string{"sub", "data.txt"} {
			info, err := os.Lstat(filepath.Join(h.podCache(), rel))
			if err != nil || info.Mode()&os.ModeSymlink != 0 {
				t.Errorf("%s is still a link (%v)", rel, err)
			}
		}
	})
}
