//go:build linux

package main

// Path resolution that cannot leave a directory, built on openat2(2) (Linux >= 5.6) and
// plain *at(2) system calls from the standard library's syscall package, so the binary
// needs no module outside the standard library.

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"syscall"
	"unsafe"
)

const (
	sysOpenat2 = 437 // the same number on every Linux architecture

	oPath = 0x200000 // O_PATH (amd64, arm64); the syscall package leaves it out on amd64

	atSymlinkNofollow = 0x100
	atRemovedir       = 0x200

	resolveNoMagiclinks = 0x02
	resolveNoSymlinks   = 0x04
	resolveBeneath      = 0x08
	resolveInRoot       = 0x10
)

// openHow is struct open_how of openat2(2).
type openHow struct {
	flags   uint64
	mode    uint64
	resolve uint64
}

// openat2 opens name relative to dirfd with the RESOLVE_* flags in resolve. EAGAIN (a
// concurrent rename seen by RESOLVE_IN_ROOT/BENEATH) is retried, as the man page advises.
func openat2(dirfd int, name string, flags int, mode uint32, resolve uint64) (int, error) {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return -1, err
	}
	how := openHow{flags: uint64(flags) | syscall.O_CLOEXEC, mode: uint64(mode), resolve: resolve}
	for range 64 {
		fd, _, errno := syscall.Syscall6(sysOpenat2, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
			uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how), 0, 0)
		switch errno {
		case 0:
			return int(fd), nil
		case syscall.EAGAIN, syscall.EINTR:
			continue
		case syscall.ENOSYS:
			return -1, errors.New("the kernel lacks openat2(2) (Linux >= 5.6 is needed to resolve paths safely)")
		default:
			return -1, errno
		}
	}
	return -1, syscall.EAGAIN
}

// openBeneath opens a path below dirfd that must contain no symlink and no "..": used for
// the staged restore folder, whose layout is fixed and never needs a link.
func openBeneath(dirfd int, name string, flags int) (int, error) {
	return openat2(dirfd, name, flags, 0, resolveBeneath|resolveNoSymlinks|resolveNoMagiclinks)
}

// openInRoot opens a path of the container's root file system the way the container will
// see it: absolute symlinks and ".." are resolved inside rootfd, never above it.
func openInRoot(rootfd int, name string, flags int) (int, error) {
	return openat2(rootfd, name, flags, 0, resolveInRoot|resolveNoMagiclinks)
}

func unlinkat(dirfd int, name string, flags int) error {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return err
	}
	_, _, errno := syscall.Syscall(syscall.SYS_UNLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(flags))
	if errno != 0 {
		return errno
	}
	return nil
}

func symlinkat(target string, dirfd int, name string) error {
	t, err := syscall.BytePtrFromString(target)
	if err != nil {
		return err
	}
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return err
	}
	_, _, errno := syscall.Syscall(syscall.SYS_SYMLINKAT, uintptr(unsafe.Pointer(t)), uintptr(dirfd), uintptr(unsafe.Pointer(p)))
	if errno != 0 {
		return errno
	}
	return nil
}

func readlinkat(dirfd int, name string) (string, error) {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return "", err
	}
	for size := 256; size <= 1<<16; size *= 4 {
		buf := make([]byte, size)
		n, _, errno := syscall.Syscall6(syscall.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
			uintptr(unsafe.Pointer(&buf[0])), uintptr(size), 0, 0)
		if errno != 0 {
			return "", errno
		}
		if int(n) < size {
			return string(buf[:n]), nil
		}
	}
	return "", syscall.ENAMETOOLONG
}

// utimensat sets atime and mtime of name in dirfd; with name "" it sets those of dirfd
// itself (futimens), which works for any descriptor but an O_PATH one.
func utimensat(dirfd int, name string, atime, mtime syscall.Timespec, flags int) error {
	times := [2]syscall.Timespec{atime, mtime}
	var p *byte
	if name != "" {
		var err error
		if p, err = syscall.BytePtrFromString(name); err != nil {
			return err
		}
	}
	_, _, errno := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		uintptr(unsafe.Pointer(&times[0])), uintptr(flags), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// lstatat is fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW) without the per-architecture
// system call: an O_PATH|O_NOFOLLOW descriptor can be fstat'ed, symlinks included.
func lstatat(dirfd int, name string) (syscall.Stat_t, error) {
	var st syscall.Stat_t
	fd, err := syscall.Openat(dirfd, name, oPath|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return st, err
	}
	defer syscall.Close(fd)
	err = syscall.Fstat(fd, &st)
	return st, err
}

// plainName reports whether s is a single path component: not empty, no '/', no NUL, not
// "." or "..". Restore ids, container names and container ids must be plain names.
func plainName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= 255 && !strings.ContainsAny(s, "/\x00")
}

// cleanRelative checks a path written in restore.json or the deleted list: relative (a
// leading "/" is dropped for the deleted list by its caller), no ".." component, no NUL.
// It returns the cleaned path, or an error naming what is wrong.
func cleanRelative(p string) (string, error) {
	if p == "" || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("path %q is empty or holds a NUL byte", p)
	}
	if path.IsAbs(p) {
		return "", fmt.Errorf("path %q is absolute", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", fmt.Errorf("path %q climbs out with \"..\"", p)
		}
	}
	c := path.Clean(p)
	if c == "." {
		return "", fmt.Errorf("path %q names the folder itself", p)
	}
	return c, nil
}

// fdFile wraps a descriptor in an *os.File that owns it (closing the file closes it).
func fdFile(fd int, name string) *os.File {
	return os.NewFile(uintptr(fd), name)
}
