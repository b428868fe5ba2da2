//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func openDir(t *testing.T, p string) int {
	t.Helper()
	fd, err := syscall.Open(p, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	must(t, err)
	t.Cleanup(func() { syscall.Close(fd) })
	return fd
}

func setTimes(t *testing.T, p string, when time.Time) {
	t.Helper()
	ts := syscall.NsecToTimespec(when.UnixNano())
	must(t, utimensat(-100 /* AT_FDCWD */, p, ts, ts, atSymlinkNofollow))
}

func writeFile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(content), mode))
	must(t, os.Chmod(p, mode)) // past the umask
}

func TestApplyDiffPreservesModesOwnersLinksAndTimes(t *testing.T) {
	base := t.TempDir()
	src, root := filepath.Join(base, "diff"), filepath.Join(base, "rootfs")
	when := time.Date(2024, 3, 1, 12, 30, 15, 123456789, time.UTC)

	writeFile(t, filepath.Join(src, "opt/app/run.sh"), "#!/bin/sh\n", 0o755)
	writeFile(t, filepath.Join(src, "opt/app/secret"), "s3cr3t", 0o600)
	writeFile(t, filepath.Join(src, "usr/bin/tool"), "elf", 0o755|os.ModeSetuid)
	writeFile(t, filepath.Join(src, "data"), "a file where a folder was", 0o644)
	must(t, os.Chmod(filepath.Join(src, "opt/app"), 0o750))
	must(t, os.Symlink("app", filepath.Join(src, "opt/current")))
	must(t, os.MkdirAll(filepath.Join(src, "etc"), 0o755))
	must(t, os.Symlink("/etc/shadow", filepath.Join(src, "etc/evil")))
	must(t, os.MkdirAll(filepath.Join(src, "run"), 0o755))
	must(t, syscall.Mkfifo(filepath.Join(src, "run/fifo"), 0o620))
	must(t, os.Chmod(filepath.Join(src, "run/fifo"), 0o620))
	asRoot := os.Geteuid() == 0
	if asRoot {
		must(t, os.Lchown(filepath.Join(src, "opt/app/secret"), 1234, 5678))
		must(t, os.Lchown(filepath.Join(src, "opt/current"), 1234, 5678))
		must(t, os.Lchown(filepath.Join(src, "opt/app"), 4321, 8765))
	}
	for _, p := range []string{"opt/app/run.sh", "opt/app/secret", "opt/current", "etc/evil", "run/fifo", "data", "opt/app"} {
		setTimes(t, filepath.Join(src, p), when)
	}

	// The new rootfs: a file where the diff has a folder, a folder where it has a file, a
	// file where it has a link, and content the diff does not touch.
	writeFile(t, filepath.Join(root, "opt/app"), "was a file", 0o644)
	writeFile(t, filepath.Join(root, "data/inner/x"), "was a folder", 0o644)
	writeFile(t, filepath.Join(root, "etc/evil"), "was a file", 0o644)
	writeFile(t, filepath.Join(root, "etc/keep"), "untouched", 0o644)

	must(t, applyDiff(openDir(t, src), openDir(t, root)))

	check := func(rel string, mode os.FileMode, uid, gid uint32, mtime bool) os.FileInfo {
		t.Helper()
		info, err := os.Lstat(filepath.Join(root, rel))
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		if info.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", rel, info.Mode(), mode)
		}
		st := info.Sys().(*syscall.Stat_t)
		if asRoot && (st.Uid != uid || st.Gid != gid) {
			t.Errorf("%s: owner %d:%d, want %d:%d", rel, st.Uid, st.Gid, uid, gid)
		}
		if mtime && !info.ModTime().Equal(when) {
			t.Errorf("%s: mtime %v, want %v", rel, info.ModTime(), when)
		}
		return info
	}
	check("opt/app", os.ModeDir|0o750, 4321, 8765, true)
	check("opt/app/run.sh", 0o755, 0, 0, true)
	check("opt/app/secret", 0o600, 1234, 5678, true)
	check("usr/bin/tool", os.ModeSetuid|0o755, 0, 0, false)
	check("data", 0o644, 0, 0, true)
	check("run/fifo", os.ModeNamedPipe|0o620, 0, 0, true)
	check("opt/current", os.ModeSymlink|0o777, 1234, 5678, true)
	check("etc/evil", os.ModeSymlink|0o777, 0, 0, true)
	for rel, want := range map[string]string{"opt/current": "app", "etc/evil": "/etc/shadow"} {
		if got, err := os.Readlink(filepath.Join(root, rel)); err != nil || got != want {
			t.Errorf("%s -> %q (%v), want %q", rel, got, err, want)
		}
	}
	for rel, want := range map[string]string{"opt/app/secret": "s3cr3t", "etc/keep": "untouched", "data": "a file where a folder was"} {
		if got, err := os.ReadFile(filepath.Join(root, rel)); err != nil || string(got) != want {
			t.Errorf("%s = %q (%v), want %q", rel, got, err, want)
		}
	}
}

func TestApplyDiffNeverWritesThroughRootfsSymlinks(t *testing.T) {
	base := t.TempDir()
	src, root, outside := filepath.Join(base, "diff"), filepath.Join(base, "rootfs"), filepath.Join(base, "host")
	writeFile(t, filepath.Join(outside, "victim"), "host data", 0o644)
	// The image's rootfs holds links that point out of it when followed on the host.
	must(t, os.MkdirAll(filepath.Join(root, "tmp"), 0o755))
	must(t, os.Symlink(outside, filepath.Join(root, "escape")))
	must(t, os.Symlink("../../host", filepath.Join(root, "tmp", "rel")))
	must(t, os.Symlink(filepath.Join(outside, "victim"), filepath.Join(root, "tmp", "x")))
	writeFile(t, filepath.Join(src, "escape/planted"), "x", 0o644)
	writeFile(t, filepath.Join(src, "tmp/rel/planted"), "x", 0o644)
	writeFile(t, filepath.Join(src, "tmp/x"), "container data", 0o644)

	must(t, applyDiff(openDir(t, src), openDir(t, root)))

	entries, err := os.ReadDir(outside)
	must(t, err)
	if len(entries) != 1 {
		t.Errorf("the diff wrote outside the rootfs: %v", entries)
	}
	if data, _ := os.ReadFile(filepath.Join(outside, "victim")); string(data) != "host data" {
		t.Errorf("host file overwritten: %q", data)
	}
	for _, rel := range []string{"escape/planted", "tmp/rel/planted"} {
		if _, err := os.Stat(filepath.Join(root, rel)); err != nil {
			t.Errorf("%s not inside the rootfs: %v", rel, err)
		}
	}
	if info, err := os.Lstat(filepath.Join(root, "tmp/x")); err != nil || !info.Mode().IsRegular() {
		t.Errorf("tmp/x should be a plain file now: %v %v", info, err)
	}
}

func TestApplyDeletions(t *testing.T) {
	base := t.TempDir()
	root, outside := filepath.Join(base, "rootfs"), filepath.Join(base, "host")
	writeFile(t, filepath.Join(outside, "victim"), "host data", 0o644)
	writeFile(t, filepath.Join(root, "etc/motd"), "x", 0o644)
	writeFile(t, filepath.Join(root, "var/cache/a/b/c"), "x", 0o644)
	writeFile(t, filepath.Join(root, "var/keep"), "x", 0o644)
	must(t, os.Symlink(outside, filepath.Join(root, "link")))
	must(t, os.Symlink(outside, filepath.Join(root, "gone-link")))

	list := strings.Join([]string{"etc/motd", "/var/cache", "link/victim", "gone-link", "never/existed", ""}, "\x00")
	must(t, applyDeletions(openDir(t, root), []byte(list)))

	for _, rel := range []string{"etc/motd", "var/cache", "gone-link"} {
		if _, err := os.Lstat(filepath.Join(root, rel)); !os.IsNotExist(err) {
			t.Errorf("%s still there (%v)", rel, err)
		}
	}
	for _, p := range []string{filepath.Join(root, "var/keep"), filepath.Join(root, "link"), filepath.Join(outside, "victim")} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s removed: %v", p, err)
		}
	}
	if err := applyDeletions(openDir(t, root), []byte("etc/../../host/victim")); err == nil || !strings.Contains(err.Error(), "climbs out") {
		t.Errorf("a path with .. was accepted: %v", err)
	}
}
