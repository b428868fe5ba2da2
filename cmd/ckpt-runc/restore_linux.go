//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// restoreFile is <staging-root>/<restore-id>/restore.json, written by the node agent.
type restoreFile struct {
	Version    int                        `json:"version"`
	RestoreID  string                     `json:"restoreId"`
	Namespace  string                     `json:"namespace"`
	PodName    string                     `json:"podName"`
	TCPClose   *bool                      `json:"tcpClose"` // absent: true (a new Pod has a new IP)
	Containers map[string]stagedContainer `json:"containers"`
	EmptyDirs  map[string]string          `json:"emptyDirs"` // volume name -> staged tree, optional
}

type stagedContainer struct {
	Images     string `json:"images"`     // CRIU images folder, required
	RootfsDiff string `json:"rootfsDiff"` // tree copied over the new rootfs, optional
	Deleted    string `json:"deleted"`    // NUL-separated paths removed from it, optional
	GPU        bool   `json:"gpu"`        // run the CUDA restore hook after runc restore
}

const (
	restoreFileVersion = 1
	restoreFileLimit   = 1 << 20
	deletedListLimit   = 256 << 20
)

// stagedRestore is a staged container that passed every check, with its open folders.
// inCheckpoint is false for a container of the Pod that the staged restore does not list
// (the Checkpoint named a subset of the containers): it is created fresh, like any other,
// after the Pod's emptyDirs are in place; ctrfd is -1 then and the container fields are
// empty.
type stagedRestore struct {
	id           string // restore id
	name         string // container name
	inCheckpoint bool
	emptyDirs    map[string]string // volume name -> staged tree, relative to dirfd
	dirfd        int               // <staging-root>/<restore-id>, O_PATH
	ctrfd        int               // .../containers/<name>, O_PATH
	ctrPath      string            // its path, for the runtime's arguments
	images       string            // absolute path of the CRIU images
	tcpClose     bool
	container    stagedContainer
}

func (s *stagedRestore) close() {
	if s.ctrfd >= 0 {
		syscall.Close(s.ctrfd)
	}
	syscall.Close(s.dirfd)
}

// openStagedRestore checks that the staged restore named by the container's annotations
// exists and belongs to this container's Pod, and opens its folders. Nothing under the
// staging root is reached through a symlink or "..".
func openStagedRestore(cfg config, ann map[string]string) (*stagedRestore, error) {
	rid := ann[annRestore]
	if !plainName(rid) {
		return nil, fmt.Errorf("annotation %s=%q is not a plain name (no '/', not '.' or '..')", annRestore, rid)
	}
	name, ns, pod := ann[annContainerName], ann[annSandboxNamespace], ann[annSandboxName]
	if !plainName(name) || ns == "" || pod == "" {
		return nil, fmt.Errorf("restore %s: config.json lacks the container name, pod name or namespace annotations (%s, %s, %s)",
			rid, annContainerName, annSandboxName, annSandboxNamespace)
	}
	rootfd, err := syscall.Open(cfg.StagingRoot, oPath|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("restore %s is not staged on this node: staging root %s: %w", rid, cfg.StagingRoot, err)
	}
	defer syscall.Close(rootfd)
	dirfd, err := openBeneath(rootfd, rid, oPath|syscall.O_DIRECTORY)
	if err != nil {
		return nil, fmt.Errorf("restore %s is not staged on this node: %s: %w", rid, filepath.Join(cfg.StagingRoot, rid), err)
	}
	s := &stagedRestore{id: rid, name: name, dirfd: dirfd, ctrfd: -1}
	fail := func(err error) (*stagedRestore, error) {
		syscall.Close(dirfd)
		if s.ctrfd >= 0 {
			syscall.Close(s.ctrfd)
		}
		return nil, err
	}
	data, err := readAllBeneath(dirfd, "restore.json", restoreFileLimit)
	if err != nil {
		return fail(fmt.Errorf("restore %s: read restore.json: %w", rid, err))
	}
	var rf restoreFile
	if err := json.Unmarshal(data, &rf); err != nil {
		return fail(fmt.Errorf("restore %s: restore.json: %w", rid, err))
	}
	if rf.Version != restoreFileVersion {
		return fail(fmt.Errorf("restore %s: restore.json version %d, this ckpt-runc reads version %d", rid, rf.Version, restoreFileVersion))
	}
	if rf.RestoreID != rid {
		return fail(fmt.Errorf("restore %s: restore.json names restore %q", rid, rf.RestoreID))
	}
	if rf.Namespace != ns || rf.PodName != pod {
		return fail(fmt.Errorf("restore %s was staged for pod %s/%s, refusing it to pod %s/%s", rid, rf.Namespace, rf.PodName, ns, pod))
	}
	s.emptyDirs = rf.EmptyDirs
	c, ok := rf.Containers[name]
	if !ok {
		return s, nil
	}
	s.inCheckpoint = true
	s.container = c
	s.tcpClose = rf.TCPClose == nil || *rf.TCPClose
	images, err := cleanRelative(c.Images)
	if err != nil {
		return fail(fmt.Errorf("restore %s container %s: images: %w", rid, name, err))
	}
	imfd, err := openBeneath(dirfd, images, oPath|syscall.O_DIRECTORY)
	if err != nil {
		return fail(fmt.Errorf("restore %s container %s: images folder %s: %w", rid, name, images, err))
	}
	syscall.Close(imfd)
	s.images = filepath.Join(cfg.StagingRoot, rid, images)
	ctrRel := filepath.Join("containers", name)
	if s.ctrfd, err = openBeneath(dirfd, ctrRel, oPath|syscall.O_DIRECTORY); err != nil {
		return fail(fmt.Errorf("restore %s container %s: folder %s: %w", rid, name, ctrRel, err))
	}
	s.ctrPath = filepath.Join(cfg.StagingRoot, rid, ctrRel)
	return s, nil
}

// applyFilesystem removes the deleted paths from the new rootfs, then copies the diff.
func (s *stagedRestore) applyFilesystem(rootfs string) error {
	c := s.container
	if c.Deleted == "" && c.RootfsDiff == "" {
		return nil
	}
	rootfd, err := syscall.Open(rootfs, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the container's rootfs: %w", err)
	}
	defer syscall.Close(rootfd)
	if c.Deleted != "" {
		rel, err := cleanRelative(c.Deleted)
		if err != nil {
			return fmt.Errorf("deleted: %w", err)
		}
		list, err := readAllBeneath(s.dirfd, rel, deletedListLimit)
		if err != nil {
			return fmt.Errorf("deleted list %s: %w", rel, err)
		}
		if err := applyDeletions(rootfd, list); err != nil {
			return err
		}
	}
	if c.RootfsDiff != "" {
		rel, err := cleanRelative(c.RootfsDiff)
		if err != nil {
			return fmt.Errorf("rootfsDiff: %w", err)
		}
		src, err := openBeneath(s.dirfd, rel, syscall.O_RDONLY|syscall.O_DIRECTORY)
		if err != nil {
			return fmt.Errorf("rootfs diff %s: %w", rel, err)
		}
		defer syscall.Close(src)
		if err := applyDiff(src, rootfd); err != nil {
			return err
		}
	}
	return nil
}

// newWorkDir makes a fresh CRIU work folder under the container's staged folder, where
// CRIU leaves restore.log for whoever investigates a failure.
func (s *stagedRestore) newWorkDir(containerID string) (string, int, error) {
	short := containerID
	if len(short) > 12 {
		short = short[:12]
	}
	name := fmt.Sprintf("work-%s-%d", short, time.Now().UnixNano())
	if err := syscall.Mkdirat(s.ctrfd, name, 0o700); err != nil {
		return "", -1, fmt.Errorf("create the CRIU work folder: %w", err)
	}
	fd, err := openBeneath(s.ctrfd, name, oPath|syscall.O_DIRECTORY)
	if err != nil {
		return "", -1, err
	}
	return filepath.Join(s.ctrPath, name), fd, nil
}

// writeAt writes a small file in dirfd by a temporary name and a rename.
func writeAt(dirfd int, name string, data []byte) error {
	tmp := name + ".tmp"
	fd, err := syscall.Openat(dirfd, tmp, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	f := fdFile(fd, tmp)
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return syscall.Renameat(dirfd, tmp, dirfd, name)
}

// criuConfig is the CRIU configuration file for this restore. runc 1.1 and later have no
// --tcp-close option, but they pass the file named by the org.criu.config annotation of
// config.json to CRIU, whose settings override runc's RPC options; `tcp-close` there
// restores established connections closed, as a Pod with a new IP needs. An existing
// org.criu.config of the Pod is kept by copying its lines first.
func criuConfig(existing string, tcpClose bool) []byte {
	var b bytes.Buffer
	if existing != "" {
		if data, err := os.ReadFile(existing); err == nil {
			b.Write(data)
			if len(data) > 0 && data[len(data)-1] != '\n' {
				b.WriteByte('\n')
			}
		}
	}
	if tcpClose {
		b.WriteString("tcp-close\n")
	}
	return b.Bytes()
}

var runcVersionRE = regexp.MustCompile(`runc version (\d+)\.(\d+)`)

// cgroupsMode is the --manage-cgroups-mode for restoring into the new Pod's cgroup:
// `ignore` on runc >= 1.2, `soft` on runc 1.1, which has no `ignore` and whose soft mode
// places the restored tasks in the cgroup of the new config.json (README.md here, the
// manage_cgroups_mode setting). A runtime whose --version names no runc version gets soft,
// runc's default.
func cgroupsMode(cfg config, runtime string) string {
	if cfg.CgroupsMode != "" {
		return cfg.CgroupsMode
	}
	out, _ := exec.Command(runtime, "--version").Output()
	m := runcVersionRE.FindSubmatch(out)
	if m == nil {
		return "soft"
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	if major > 1 || (major == 1 && minor >= 2) {
		return "ignore"
	}
	return "soft"
}

// restoreArgs is the runtime command line that replaces `create`.
func restoreArgs(cfg config, inv invocation, ca createArgs, images, work, mode string, tcpClose bool) []string {
	var args []string
	if cfg.CRIU != "" && !inv.hasCRIU {
		args = append(args, "--criu", cfg.CRIU)
	}
	args = append(args, inv.globals...)
	args = append(args, "restore", "--detach", "--bundle", ca.bundle)
	if ca.pidFile != "" {
		args = append(args, "--pid-file", ca.pidFile)
	}
	if ca.consoleSocket != "" {
		args = append(args, "--console-socket", ca.consoleSocket)
	}
	if ca.noPivot {
		args = append(args, "--no-pivot")
	}
	args = append(args, "--image-path", images, "--work-path", work, "--manage-cgroups-mode", mode)
	if !tcpClose {
		// The Pod asked to keep connections: only possible where the address is the same.
		args = append(args, "--tcp-established")
	}
	return append(args, ca.id)
}

// record is /run/ckpt-runc/<container-id>: the container was created by a restore, so
// `start` has nothing to do; `delete` removes the record.
type record struct {
	RestoreID  string `json:"restoreId"`
	Container  string `json:"container"`
	RestoredAt string `json:"restoredAt"`
}

func recordPath(cfg config, id string) string { return filepath.Join(cfg.StateDir, id) }

func isRestored(cfg config, id string) bool {
	if !plainName(id) {
		return false
	}
	info, err := os.Lstat(recordPath(cfg, id))
	return err == nil && info.Mode().IsRegular()
}

func writeRecord(cfg config, id string, r record) error {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return err
	}
	data, _ := json.Marshal(r)
	tmp := recordPath(cfg, id) + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, recordPath(cfg, id))
}

// runtimeCommand runs the next runtime with the wrapper's own stdio. For `runc restore`
// that matters: runc hands its stdin/stdout/stderr (the shim's pipes of this container)
// to CRIU as the replacements of the dumped stdio pipes, which is how `kubectl logs`
// continues with the restored process's output (README.md here, "Known limits").
func runtimeCommand(runtime string, args []string) int {
	cmd := exec.Command(runtime, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exitErr):
		if code := exitErr.ExitCode(); code >= 0 {
			return code
		}
		return 128 + int(exitErr.Sys().(syscall.WaitStatus).Signal())
	default:
		return 127
	}
}

func readPID(p string) int {
	data, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// runGPUHook runs `<hook> PID` (CUDA restore and unlock of the restored processes, through
// the driver API, which takes host PIDs) and returns its failure with the end of its output.
func runGPUHook(cfg config, s *stagedRestore, containerID string, pid int) error {
	if pid <= 0 {
		return errors.New("no pid of the restored container for the GPU restore hook")
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.GPUHookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.GPUHook, strconv.Itoa(pid))
	cmd.Env = append(os.Environ(),
		"CKPT_RESTORE_ID="+s.id, "CKPT_CONTAINER_NAME="+s.name, "CKPT_CONTAINER_ID="+containerID)
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	tail := strings.TrimSpace(string(out))
	if len(tail) > 2000 {
		tail = "..." + tail[len(tail)-2000:]
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s", cfg.GPUHookTimeout)
	}
	if tail != "" {
		return fmt.Errorf("GPU restore hook %s %d: %w: %s", cfg.GPUHook, pid, err, tail)
	}
	return fmt.Errorf("GPU restore hook %s %d: %w", cfg.GPUHook, pid, err)
}

// restoreCreate turns `create` of a staged container into `runc restore --detach`. It
// returns the exit status for the shim and an error to log.
func restoreCreate(cfg config, runtime string, inv invocation, ca createArgs, spec bundleSpec, s *stagedRestore) (int, error) {
	prefix := fmt.Sprintf("ckpt-runc: restore %s container %s", s.id, s.name)
	if !plainName(ca.id) {
		return 1, fmt.Errorf("%s: container id %q is not a plain name", prefix, ca.id)
	}
	if ca.preserveFDs > 0 {
		return 1, fmt.Errorf("%s: runc restore cannot pass extra descriptors (--preserve-fds %d)", prefix, ca.preserveFDs)
	}
	rootfs, err := spec.rootfsPath(ca.bundle)
	if err != nil {
		return 1, fmt.Errorf("%s: %w", prefix, err)
	}
	if err := s.applyFilesystem(rootfs); err != nil {
		return 1, fmt.Errorf("%s: %w", prefix, err)
	}
	work, workfd, err := s.newWorkDir(ca.id)
	if err != nil {
		return 1, fmt.Errorf("%s: %w", prefix, err)
	}
	defer syscall.Close(workfd)
	if s.tcpClose {
		conf := criuConfig(spec.Annotations[annCRIUConfig], true)
		if err := writeAt(workfd, "criu.conf", conf); err != nil {
			return 1, fmt.Errorf("%s: write the CRIU configuration: %w", prefix, err)
		}
		if err := setAnnotation(ca.bundle, annCRIUConfig, filepath.Join(work, "criu.conf")); err != nil {
			return 1, fmt.Errorf("%s: point config.json at the CRIU configuration: %w", prefix, err)
		}
	}
	mode := cgroupsMode(cfg, runtime)
	status := runtimeCommand(runtime, restoreArgs(cfg, inv, ca, s.images, work, mode, s.tcpClose))
	var failure error
	if status != 0 {
		reason := ""
		if inv.logFormat == "json" && inv.logPath != "" {
			if last := lastLoggedError(inv.logPath); last != "" {
				reason = ": " + last
			}
		}
		failure = fmt.Errorf("%s: %s restore exited with status %d%s (CRIU log: %s)",
			prefix, filepath.Base(runtime), status, reason, filepath.Join(work, "restore.log"))
	} else {
		if s.container.GPU {
			if err := runGPUHook(cfg, s, ca.id, readPID(ca.pidFile)); err != nil {
				failure = fmt.Errorf("%s: %w", prefix, err)
			}
		}
		if failure == nil {
			r := record{RestoreID: s.id, Container: s.name, RestoredAt: time.Now().UTC().Format(time.RFC3339Nano)}
			if err := writeRecord(cfg, ca.id, r); err != nil {
				failure = fmt.Errorf("%s: record the restored container in %s: %w", prefix, cfg.StateDir, err)
			}
		}
		if failure != nil {
			// The process runs but the container must not count as created: remove it so
			// that nothing is left running behind the failed create.
			cleanup := append(append([]string{}, inv.globals...), "delete", "--force", ca.id)
			runtimeCommand(runtime, cleanup)
		}
	}
	if failure != nil {
		if status == 0 {
			status = 1
		}
		return status, failure
	}
	return 0, nil
}
