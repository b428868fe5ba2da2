//go:build linux

package main

// Applying a container's staged writable-layer changes to its new root file system, and a
// Pod's staged emptyDir contents to its new emptyDir folders (the same copy, the emptyDir
// folder standing where the rootfs stands below).
//
// Every destination path is resolved inside the rootfs with openat2(RESOLVE_IN_ROOT), and
// every final component is created, replaced or removed with *at calls on the directory
// descriptor that resolution returned, never through a path string. A symlink in the new
// rootfs therefore resolves the way it would inside the container (an absolute link ends
// under the rootfs, ".." stops at it) and nothing outside the rootfs can be reached.
// Symlinks inside the staged diff are content: copied as links, never followed.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"syscall"
)

// applyDeletions removes from the rootfs every path of a NUL-separated list. A path that
// is already absent is not an error, so a retried create applies the same list again.
func applyDeletions(rootfd int, list []byte) error {
	for _, raw := range bytes.Split(list, []byte{0}) {
		entry := strings.TrimLeft(string(raw), "/")
		if entry == "" {
			continue
		}
		rel, err := cleanRelative(entry)
		if err != nil {
			return fmt.Errorf("deleted list: %w", err)
		}
		parent, err := openInRoot(rootfd, path.Dir(rel), oPath|syscall.O_DIRECTORY)
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("deleted list: open the folder of %q in the rootfs: %w", rel, err)
		}
		err = removeAt(parent, path.Base(rel))
		syscall.Close(parent)
		if err != nil {
			return fmt.Errorf("deleted list: remove %q: %w", rel, err)
		}
	}
	return nil
}

// removeAt removes name from the directory dirfd, recursively if it is a directory (a
// symlink is removed, never followed). Absent is fine.
func removeAt(dirfd int, name string) error {
	st, err := lstatat(dirfd, name)
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return unlinkat(dirfd, name, 0)
	}
	fd, err := syscall.Openat(dirfd, name, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	dir := fdFile(fd, name)
	names, err := dir.Readdirnames(-1)
	if err == nil {
		for _, child := range names {
			if err = removeAt(fd, child); err != nil {
				break
			}
		}
	}
	dir.Close()
	if err != nil {
		return err
	}
	return unlinkat(dirfd, name, atRemovedir)
}

// applyDiff copies the tree under srcfd (a directory descriptor of the staged diff) over
// the rootfs rootfd, preserving modes, owners, symlinks and modification times.
func applyDiff(srcfd, rootfd int) error {
	return copyStagedTree(srcfd, rootfd, "the rootfs diff")
}

// copyStagedTree copies the staged tree under srcfd over the folder dstfd (the container's
// rootfs, or an emptyDir of the Pod) with the rules above; what names the tree in errors.
func copyStagedTree(srcfd, dstfd int, what string) error {
	dst, err := openInRoot(dstfd, ".", syscall.O_RDONLY|syscall.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("open the destination of %s: %w", what, err)
	}
	defer syscall.Close(dst)
	c := treeCopy{what: what}
	return c.tree(srcfd, dst, "")
}

// treeCopy is one copy of a staged tree; what names it in errors ("the rootfs diff").
type treeCopy struct{ what string }

func (c treeCopy) tree(srcDir, dstDir int, rel string) error {
	dup, err := syscall.Dup(srcDir)
	if err != nil {
		return err
	}
	listing := fdFile(dup, rel)
	names, err := listing.Readdirnames(-1)
	listing.Close()
	if err != nil {
		return fmt.Errorf("read %s at %q: %w", c.what, "/"+rel, err)
	}
	for _, name := range names {
		if err := c.entry(srcDir, dstDir, rel, name); err != nil {
			return err
		}
	}
	return nil
}

func (c treeCopy) entry(srcDir, dstDir int, rel, name string) error {
	child := path.Join(rel, name)
	wrap := func(what string, err error) error {
		return fmt.Errorf("apply %s at %q: %s: %w", c.what, "/"+child, what, err)
	}
	st, err := lstatat(srcDir, name)
	if err != nil {
		return wrap("stat the staged entry", err)
	}
	uid, gid := int(st.Uid), int(st.Gid)
	perm := st.Mode & 0o7777
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		return c.dir(srcDir, dstDir, rel, name, st)
	case syscall.S_IFREG:
		if err := replaceable(dstDir, name, false); err != nil {
			return wrap("make room", err)
		}
		return wrapNil(wrap, "copy the file", copyFile(srcDir, dstDir, name, st))
	case syscall.S_IFLNK:
		target, err := readlinkat(srcDir, name)
		if err != nil {
			return wrap("read the staged link", err)
		}
		if err := replaceable(dstDir, name, false); err != nil {
			return wrap("make room", err)
		}
		if err := symlinkat(target, dstDir, name); err != nil {
			return wrap("create the link", err)
		}
		if err := syscall.Fchownat(dstDir, name, uid, gid, atSymlinkNofollow); err != nil {
			return wrap("chown the link", err)
		}
		return wrapNil(wrap, "set the link's times", utimensat(dstDir, name, st.Atim, st.Mtim, atSymlinkNofollow))
	case syscall.S_IFIFO, syscall.S_IFCHR, syscall.S_IFBLK:
		if err := replaceable(dstDir, name, false); err != nil {
			return wrap("make room", err)
		}
		if err := syscall.Mknodat(dstDir, name, st.Mode, int(st.Rdev)); err != nil {
			return wrap("create the node", err)
		}
		if err := syscall.Fchownat(dstDir, name, uid, gid, atSymlinkNofollow); err != nil {
			return wrap("chown the node", err)
		}
		// mknod's mode went through the umask; a node is never a symlink, so following is moot.
		if err := syscall.Fchmodat(dstDir, name, perm, 0); err != nil {
			return wrap("chmod the node", err)
		}
		return wrapNil(wrap, "set the node's times", utimensat(dstDir, name, st.Atim, st.Mtim, atSymlinkNofollow))
	default:
		// A socket file has no meaning without the process that bound it; a restored
		// process re-creates its bound sockets through CRIU, not from the layer.
		return nil
	}
}

func wrapNil(wrap func(string, error) error, what string, err error) error {
	if err == nil {
		return nil
	}
	return wrap(what, err)
}

// replaceable clears name in dirfd for a new entry: a directory is kept when keepDir is
// set and the existing entry is a real directory; anything else there is removed.
func replaceable(dirfd int, name string, keepDir bool) error {
	st, err := lstatat(dirfd, name)
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if keepDir && st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return nil
	}
	return removeAt(dirfd, name)
}

func (c treeCopy) dir(srcDir, dstDir int, rel, name string, st syscall.Stat_t) error {
	child := path.Join(rel, name)
	wrap := func(what string, err error) error {
		return fmt.Errorf("apply %s at %q: %s: %w", c.what, "/"+child, what, err)
	}
	// A directory of the diff merges into an existing directory; it replaces a file or a
	// symlink at that name, as an overlay upper directory hides a lower non-directory.
	if err := replaceable(dstDir, name, true); err != nil {
		return wrap("make room", err)
	}
	if err := syscall.Mkdirat(dstDir, name, 0o700); err != nil && !errors.Is(err, syscall.EEXIST) {
		return wrap("create the folder", err)
	}
	dfd, err := syscall.Openat(dstDir, name, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return wrap("open the folder", err)
	}
	defer syscall.Close(dfd)
	sfd, err := syscall.Openat(srcDir, name, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return wrap("open the staged folder", err)
	}
	defer syscall.Close(sfd)
	if err := c.tree(sfd, dfd, child); err != nil {
		return err
	}
	// Owner before mode (chown clears set-id bits), times last (children touched mtime).
	if err := syscall.Fchown(dfd, int(st.Uid), int(st.Gid)); err != nil {
		return wrap("chown the folder", err)
	}
	if err := syscall.Fchmod(dfd, st.Mode&0o7777); err != nil {
		return wrap("chmod the folder", err)
	}
	return wrapNil(wrap, "set the folder's times", utimensat(dfd, "", st.Atim, st.Mtim, 0))
}

func copyFile(srcDir, dstDir int, name string, st syscall.Stat_t) error {
	sfd, err := syscall.Openat(srcDir, name, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	src := fdFile(sfd, name)
	defer src.Close()
	dfd, err := syscall.Openat(dstDir, name,
		syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	dst := fdFile(dfd, name)
	defer dst.Close()
	if _, err := io.Copy(dst, src); err != nil {
		return err
	}
	if err := syscall.Fchown(dfd, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := syscall.Fchmod(dfd, st.Mode&0o7777); err != nil {
		return err
	}
	if err := utimensat(dfd, "", st.Atim, st.Mtim, 0); err != nil {
		return err
	}
	return dst.Close()
}

// readAllBeneath reads a staged file (no symlinks on its path) of at most limit bytes.
func readAllBeneath(dirfd int, rel string, limit int64) ([]byte, error) {
	fd, err := openBeneath(dirfd, rel, syscall.O_RDONLY)
	if err != nil {
		return nil, err
	}
	f := fdFile(fd, rel)
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", rel, limit)
	}
	return data, nil
}
