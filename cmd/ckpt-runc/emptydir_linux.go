//go:build linux

package main

// Restoring a Pod's emptyDir contents. The agent stages each captured emptyDir as a tree
// (restore.json "emptyDirs": {"<volume>": "volumes/<volume>"}); the kubelet has made the new
// Pod's empty folders before any container of it is created, and each container's
// config.json bind-mounts the ones it uses from
// <kubelet_root>/pods/<sandbox-uid>/volumes/kubernetes.io~empty-dir/<volume>. The first
// container create that mounts a volume copies the staged tree into that folder; an
// emptyDir is shared by the Pod's containers, so every later one must find the data there,
// and must not copy it again over what the running containers have written since.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

const (
	// emptyDirMark is in the host path of every emptyDir volume the kubelet mounts; the
	// agent's capture finds the volumes by the same mark.
	emptyDirMark = "/volumes/kubernetes.io~empty-dir/"
	// appliedSuffix names the once-only marker beside a staged volume tree. Volume names
	// are DNS-1123 labels (no '.'), so "<volume>.applied" is never another volume's tree.
	appliedSuffix = ".applied"
	appliedLimit  = 64 << 10
)

// appliedMarker is the JSON in volumes/<volume>.applied: who copied the volume and when,
// or why the copy failed (error set: the next create that mounts it copies again).
type appliedMarker struct {
	Time        string `json:"time"`
	ContainerID string `json:"containerId"`
	Container   string `json:"container"`
	Error       string `json:"error,omitempty"`
}

// emptyDirMounts returns, for each emptyDir volume of the staged restore that the
// container mounts, its host folder relative to the kubelet root. A source that names a
// staged volume but is not that volume's folder under this Pod's own kubelet folder is
// refused: the copy must never land in another Pod's volume or anywhere else on the host.
func (s *stagedRestore) emptyDirMounts(cfg config, spec bundleSpec) ([]string, []string, error) {
	var vols, rels []string
	uid := spec.Annotations[annSandboxUID]
	for _, m := range spec.Mounts {
		src := filepath.Clean(m.Source)
		_, vol, found := strings.Cut(src, emptyDirMark)
		if !found || strings.Contains(vol, "/") {
			// Not a whole emptyDir (a subPath of one is a different source, left as the
			// kubelet made it).
			continue
		}
		if _, staged := s.emptyDirs[vol]; !staged || slices.Contains(vols, vol) {
			continue
		}
		if !plainName(uid) {
			return nil, nil, fmt.Errorf("emptyDir %s: config.json has no usable pod uid (annotation %s=%q)", vol, annSandboxUID, uid)
		}
		rel := path.Join("pods", uid, "volumes", "kubernetes.io~empty-dir", vol)
		if want := filepath.Join(cfg.KubeletRoot, rel); src != want {
			return nil, nil, fmt.Errorf("emptyDir %s is mounted from %s, not from this Pod's own folder %s; refusing to copy into it",
				vol, m.Source, want)
		}
		vols = append(vols, vol)
		rels = append(rels, rel)
	}
	return vols, rels, nil
}

// applyEmptyDirs copies the staged tree of every staged emptyDir the container mounts into
// the Pod's folder of that volume, once per restore and volume.
func (s *stagedRestore) applyEmptyDirs(cfg config, spec bundleSpec, containerID string) error {
	prefix := fmt.Sprintf("ckpt-runc: restore %s container %s", s.id, s.name)
	vols, rels, err := s.emptyDirMounts(cfg, spec)
	if err != nil {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	if len(vols) == 0 {
		return nil
	}
	// The kubelet root is the administrator's setting and may itself be a link; below it
	// nothing may be one (RESOLVE_NO_SYMLINKS), so a link planted in the Pod's volume
	// folders cannot redirect the copy.
	kfd, err := syscall.Open(cfg.KubeletRoot, oPath|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: kubelet root %s: %w", prefix, cfg.KubeletRoot, err)
	}
	defer syscall.Close(kfd)
	for i, vol := range vols {
		if err := s.applyEmptyDir(kfd, vol, rels[i], containerID); err != nil {
			return fmt.Errorf("%s: emptyDir %s: %w", prefix, vol, err)
		}
	}
	return nil
}

func (s *stagedRestore) applyEmptyDir(kfd int, vol, dstRel, containerID string) error {
	staged, err := cleanRelative(s.emptyDirs[vol])
	if err != nil {
		return fmt.Errorf("staged tree: %w", err)
	}
	parent, err := openBeneath(s.dirfd, path.Dir(staged), syscall.O_RDONLY|syscall.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("staged folder %s: %w", path.Dir(staged), err)
	}
	defer syscall.Close(parent)
	src, err := openBeneath(parent, path.Base(staged), syscall.O_RDONLY|syscall.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("staged tree %s: %w", staged, err)
	}
	defer syscall.Close(src)
	dst, err := openBeneath(kfd, dstRel, syscall.O_RDONLY|syscall.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("the Pod's folder %s under the kubelet root: %w", dstRel, err)
	}
	defer syscall.Close(dst)

	// Claim the volume: O_EXCL makes exactly one create the copier. The claimant holds
	// flock on the marker until its result is written, so a create that finds the marker
	// waits for the copy to end and then reads how it went; a copier that died (lock
	// released, marker empty) or failed (error recorded) is replaced by the next one.
	name := path.Base(staged) + appliedSuffix
	mfd, err := syscall.Openat(parent, name, syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o644)
	if errors.Is(err, syscall.EEXIST) {
		mfd, err = syscall.Openat(parent, name, syscall.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	}
	if err != nil {
		return fmt.Errorf("marker %s: %w", name, err)
	}
	f := fdFile(mfd, name)
	defer f.Close() // also releases the lock
	if err := flock(mfd); err != nil {
		return fmt.Errorf("lock the marker %s: %w", name, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(mfd, &st); err != nil {
		return fmt.Errorf("marker %s: %w", name, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fmt.Errorf("marker %s is not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, appliedLimit))
	if err != nil {
		return fmt.Errorf("read the marker %s: %w", name, err)
	}
	var prev appliedMarker
	if len(data) > 0 && json.Unmarshal(data, &prev) == nil && prev.Error == "" && prev.Time != "" {
		return nil // copied by an earlier create of this Pod
	}
	copyErr := copyStagedTree(src, dst, "the emptyDir")
	m := appliedMarker{ContainerID: containerID, Container: s.name, Time: time.Now().UTC().Format(time.RFC3339Nano)}
	if copyErr != nil {
		m.Error = copyErr.Error()
	}
	line, _ := json.Marshal(m)
	if err := writeMarker(f, append(line, '\n')); err != nil && copyErr == nil {
		return fmt.Errorf("write the marker %s: %w", name, err)
	}
	return copyErr
}

// flock takes an exclusive lock on fd, waiting for it (retried on EINTR).
func flock(fd int) error {
	for {
		err := syscall.Flock(fd, syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// writeMarker replaces the marker's content. Readers hold the same lock, so they never
// see the file between the truncate and the write.
func writeMarker(f *os.File, data []byte) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		return err
	}
	return f.Sync()
}
