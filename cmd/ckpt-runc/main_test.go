//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The test binary doubles as the wrapper: run with CKPT_RUNC_TEST_MAIN=1 it is ckpt-runc,
// so the tests exercise the real exec and exit paths without building a second binary.
func TestMain(m *testing.M) {
	if os.Getenv("CKPT_RUNC_TEST_MAIN") == "1" {
		os.Exit(run(os.Args))
	}
	os.Exit(m.Run())
}

// fakeRunc records every call (argv, environment, pid, what fds 0-2 point at) in its own
// folder, answers --version, writes the pid file of a restore and can fail it.
const fakeRunc = `#!/bin/sh
d="$FAKE_DIR/calls"; mkdir -p "$d"
n=$(ls "$d" | wc -l); f="$d/$n"; mkdir "$f"
for a in "$@"; do printf '%s\n' "$a"; done > "$f/args"
env > "$f/env"
echo $$ > "$f/pid"
# Read before any redirection of this shell's own descriptors.
s0=$(readlink /proc/$$/fd/0); s1=$(readlink /proc/$$/fd/1); s2=$(readlink /proc/$$/fd/2)
printf '%s\n%s\n%s\n' "$s0" "$s1" "$s2" > "$f/stdio"
if [ "$1" = "--version" ]; then echo "runc version ${FAKE_RUNC_VERSION:-1.1.5}"; exit 0; fi
cmd=""; pidfile=""; log=""; prev=""
for a in "$@"; do
	case "$prev" in --pid-file) pidfile=$a;; --log) log=$a;; esac
	if [ -z "$cmd" ]; then
		case "$prev" in --root|--log|--log-format|--criu|--rootless) ;; *)
			case "$a" in -*) ;; *) cmd=$a;; esac;;
		esac
	fi
	prev=$a
done
if [ "$cmd" = restore ]; then
	if [ -n "$FAKE_RESTORE_FAIL" ]; then
		printf '{"level":"error","msg":"%s","time":"2025-01-01T00:00:00Z"}\n' "$FAKE_RESTORE_FAIL" >> "$log"
		exit 3
	fi
	[ -n "$pidfile" ] && echo 4242 > "$pidfile"
fi
exit 0
`

type call struct {
	args  []string
	env   []string
	pid   int
	stdio []string
}

type harness struct {
	t       *testing.T
	dir     string
	runc    string
	staging string
	state   string
	runRoot string
	log     string
	bundle  string
	kubelet string
	env     []string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{
		t: t, dir: dir,
		runc:    filepath.Join(dir, "bin", "runc"),
		staging: filepath.Join(dir, "restores"),
		state:   filepath.Join(dir, "state"),
		runRoot: filepath.Join(dir, "runc-root"),
		log:     filepath.Join(dir, "runtime.log"),
		bundle:  filepath.Join(dir, "bundle"),
		kubelet: filepath.Join(dir, "kubelet"),
	}
	must(t, os.MkdirAll(filepath.Dir(h.runc), 0o755))
	must(t, os.WriteFile(h.runc, []byte(fakeRunc), 0o755))
	must(t, os.MkdirAll(h.staging, 0o755))
	must(t, os.MkdirAll(filepath.Join(h.bundle, "rootfs", "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(h.bundle, "rootfs", "etc", "hostname"), []byte("old\n"), 0o644))
	h.env = []string{
		"CKPT_RUNC_TEST_MAIN=1",
		"CKPT_RUNC_CONFIG=" + filepath.Join(dir, "absent.conf"),
		"CKPT_RUNC_RUNTIME=" + h.runc,
		"CKPT_RUNC_STAGING_ROOT=" + h.staging,
		"CKPT_RUNC_STATE_DIR=" + h.state,
		"CKPT_RUNC_KUBELET_ROOT=" + h.kubelet,
		"FAKE_DIR=" + dir,
		"PATH=/usr/bin:/bin",
		"MARKER_VAR=kept",
	}
	return h
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// annotations of an app container of pod demo/counter-restored with the restore "rst-1".
func appAnnotations() map[string]string {
	return map[string]string{
		annRestore:          "rst-1",
		annContainerType:    "container",
		annContainerName:    "app",
		annSandboxName:      "counter-restored",
		annSandboxNamespace: "demo",
		annSandboxUID:       "5b1c6f1e-0000-4000-8000-000000000001",
	}
}

func (h *harness) writeConfig(annotations map[string]string) {
	h.t.Helper()
	spec := map[string]any{
		"ociVersion":  "1.0.2",
		"process":     map[string]any{"args": []string{"/bin/sh"}, "cwd": "/"},
		"root":        map[string]any{"path": "rootfs"},
		"annotations": annotations,
	}
	data, err := json.Marshal(spec)
	must(h.t, err)
	must(h.t, os.WriteFile(filepath.Join(h.bundle, "config.json"), data, 0o644))
}

// stage writes <staging>/<rid>/restore.json and a container folder with images.
func (h *harness) stage(rid string, rf map[string]any, containers ...string) string {
	h.t.Helper()
	dir := filepath.Join(h.staging, rid)
	for _, c := range containers {
		must(h.t, os.MkdirAll(filepath.Join(dir, "containers", c, "images"), 0o700))
		must(h.t, os.WriteFile(filepath.Join(dir, "containers", c, "images", "inventory.img"), []byte("x"), 0o600))
		// An empty diff and deleted list, as the agent stages for an untouched layer.
		must(h.t, os.MkdirAll(filepath.Join(dir, "containers", c, "rootfs-diff"), 0o755))
		must(h.t, os.WriteFile(filepath.Join(dir, "containers", c, "deleted"), nil, 0o644))
	}
	data, err := json.Marshal(rf)
	must(h.t, err)
	must(h.t, os.WriteFile(filepath.Join(dir, "restore.json"), data, 0o644))
	return dir
}

func defaultRestoreFile() map[string]any {
	return map[string]any{
		"version": 1, "restoreId": "rst-1", "namespace": "demo", "podName": "counter-restored",
		"tcpClose": true,
		"containers": map[string]any{"app": map[string]any{
			"images":     "containers/app/images",
			"rootfsDiff": "containers/app/rootfs-diff",
			"deleted":    "containers/app/deleted",
		}},
	}
}

// wrapper runs the wrapper with the given arguments (after argv[0]).
func (h *harness) wrapper(extraEnv []string, args ...string) (int, *exec.Cmd) {
	h.t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(slices.Clone(h.env), extraEnv...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			h.t.Fatalf("run the wrapper: %v", err)
		}
	}
	h.t.Logf("wrapper %v -> %d; stderr: %s", args, cmd.ProcessState.ExitCode(), stderr.String())
	return cmd.ProcessState.ExitCode(), cmd
}

func (h *harness) globals() []string {
	return []string{"--root", h.runRoot, "--log", h.log, "--log-format", "json"}
}

func (h *harness) createArgs(id string) []string {
	return append(h.globals(), "create", "--bundle", h.bundle, "--pid-file", filepath.Join(h.dir, "init.pid"), id)
}

func (h *harness) calls() []call {
	h.t.Helper()
	base := filepath.Join(h.dir, "calls")
	entries, err := os.ReadDir(base)
	if os.IsNotExist(err) {
		return nil
	}
	must(h.t, err)
	names := make([]int, 0, len(entries))
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		must(h.t, err)
		names = append(names, n)
	}
	sort.Ints(names)
	var out []call
	for _, n := range names {
		d := filepath.Join(base, strconv.Itoa(n))
		read := func(name string) []string {
			data, err := os.ReadFile(filepath.Join(d, name))
			must(h.t, err)
			return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		}
		pid, err := strconv.Atoi(read("pid")[0])
		must(h.t, err)
		out = append(out, call{args: read("args"), env: read("env"), pid: pid, stdio: read("stdio")})
	}
	return out
}

// restoreCalls are the calls other than the `--version` probe.
func (h *harness) commandCalls() []call {
	var out []call
	for _, c := range h.calls() {
		if len(c.args) == 1 && c.args[0] == "--version" {
			continue
		}
		out = append(out, c)
	}
	return out
}

func (h *harness) lastLogError() string {
	return lastLoggedError(h.log)
}

func TestPassThroughIsExecWithSameArgvEnvAndStdio(t *testing.T) {
	h := newHarness(t)
	out, err := os.Create(filepath.Join(h.dir, "stdout"))
	must(t, err)
	defer out.Close()
	args := append(h.globals(), "state", "abc")
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = h.env
	cmd.Stdout = out
	must(t, cmd.Run())
	calls := h.calls()
	if len(calls) != 1 {
		t.Fatalf("want one runtime call, got %d", len(calls))
	}
	c := calls[0]
	if !slices.Equal(c.args, args) {
		t.Errorf("argv %q, want %q", c.args, args)
	}
	if c.pid != cmd.Process.Pid {
		t.Errorf("runtime ran as pid %d, the wrapper was %d: not an exec", c.pid, cmd.Process.Pid)
	}
	if c.stdio[1] != out.Name() {
		t.Errorf("runtime stdout is %q, want %q", c.stdio[1], out.Name())
	}
	if !slices.Contains(c.env, "MARKER_VAR=kept") {
		t.Errorf("environment not passed: %q", c.env)
	}
}

func TestCreateWithoutRestoreAnnotationPassesThrough(t *testing.T) {
	h := newHarness(t)
	h.writeConfig(map[string]string{annContainerType: "container", annContainerName: "app"})
	args := h.createArgs("plain")
	if rc, _ := h.wrapper(nil, args...); rc != 0 {
		t.Fatalf("exit %d", rc)
	}
	calls := h.calls()
	if len(calls) != 1 || !slices.Equal(calls[0].args, args) {
		t.Fatalf("want the create passed through unchanged, got %+v", calls)
	}
}

func TestSandboxOfRestoredPodIsCreatedNotRestored(t *testing.T) {
	h := newHarness(t)
	ann := appAnnotations()
	ann[annContainerType] = "sandbox"
	h.writeConfig(ann)
	h.stage("rst-1", defaultRestoreFile(), "app")
	args := h.createArgs("sandbox1")
	if rc, _ := h.wrapper(nil, args...); rc != 0 {
		t.Fatalf("exit %d", rc)
	}
	calls := h.calls()
	if len(calls) != 1 || !slices.Equal(calls[0].args, args) {
		t.Fatalf("want the sandbox's create passed through unchanged, got %+v", calls)
	}
}

func TestContainerOutsideTheCheckpointIsCreatedFresh(t *testing.T) {
	h := newHarness(t)
	ann := appAnnotations()
	ann[annContainerName] = "sidecar"
	h.writeConfig(ann)
	h.stage("rst-1", defaultRestoreFile(), "app")
	args := h.createArgs("side1")
	if rc, _ := h.wrapper(nil, args...); rc != 0 {
		t.Fatalf("exit %d", rc)
	}
	calls := h.commandCalls()
	if len(calls) != 1 || !slices.Equal(calls[0].args, args) {
		t.Fatalf("want a plain create, got %+v", calls)
	}
}

func TestRestoreCreateStartDelete(t *testing.T) {
	for _, tc := range []struct{ version, mode string }{{"1.1.5", "soft"}, {"1.2.4", "ignore"}} {
		t.Run(tc.version, func(t *testing.T) {
			h := newHarness(t)
			h.writeConfig(appAnnotations())
			dir := h.stage("rst-1", defaultRestoreFile(), "app")
			diff := filepath.Join(dir, "containers", "app", "rootfs-diff")
			must(t, os.MkdirAll(filepath.Join(diff, "tmp"), 0o1777))
			must(t, os.WriteFile(filepath.Join(diff, "tmp", "marker"), []byte("from the checkpoint"), 0o640))
			must(t, os.WriteFile(filepath.Join(dir, "containers", "app", "deleted"), []byte("etc/hostname\x00"), 0o644))
			pidFile := filepath.Join(h.dir, "init.pid")
			sock := filepath.Join(h.dir, "console.sock")
			id := "0123456789abcdef0123"
			args := append(h.globals(), "create", "--bundle", h.bundle, "--pid-file", pidFile, "--console-socket", sock, id)
			if rc, _ := h.wrapper([]string{"FAKE_RUNC_VERSION=" + tc.version}, args...); rc != 0 {
				t.Fatalf("create exit %d: %s", rc, h.lastLogError())
			}
			calls := h.commandCalls()
			if len(calls) != 1 {
				t.Fatalf("want one restore call, got %+v", calls)
			}
			got := calls[0].args
			workIdx := slices.Index(got, "--work-path") + 1
			if workIdx == 0 {
				t.Fatalf("no --work-path in %q", got)
			}
			work := got[workIdx]
			want := append(h.globals(), "restore", "--detach", "--bundle", h.bundle, "--pid-file", pidFile,
				"--console-socket", sock, "--image-path", filepath.Join(dir, "containers", "app", "images"),
				"--work-path", work, "--manage-cgroups-mode", tc.mode, id)
			if !slices.Equal(got, want) {
				t.Fatalf("restore argv\n got %q\nwant %q", got, want)
			}
			if filepath.Dir(work) != filepath.Join(dir, "containers", "app") || !strings.HasPrefix(filepath.Base(work), "work-0123456789ab-") {
				t.Errorf("work dir %s is not a fresh folder beside the images", work)
			}
			// tcp-close reaches CRIU through the config file named in config.json.
			spec, err := readSpec(h.bundle)
			must(t, err)
			conf := spec.Annotations[annCRIUConfig]
			if conf != filepath.Join(work, "criu.conf") {
				t.Errorf("org.criu.config = %q", conf)
			}
			if data, err := os.ReadFile(conf); err != nil || string(data) != "tcp-close\n" {
				t.Errorf("criu.conf = %q, %v", data, err)
			}
			if spec.Annotations[annRestore] != "rst-1" || spec.Root.Path != "rootfs" {
				t.Errorf("config.json lost its content: %+v", spec)
			}
			// Filesystem changes were applied before the restore.
			if data, err := os.ReadFile(filepath.Join(h.bundle, "rootfs", "tmp", "marker")); err != nil || string(data) != "from the checkpoint" {
				t.Errorf("diff not applied: %q %v", data, err)
			}
			if _, err := os.Lstat(filepath.Join(h.bundle, "rootfs", "etc", "hostname")); !os.IsNotExist(err) {
				t.Errorf("deleted path still there: %v", err)
			}
			if !isRestored(config{StateDir: h.state}, id) {
				t.Fatal("no restore record")
			}

			// start is a no-op for the restored container.
			before := len(h.calls())
			if rc, _ := h.wrapper(nil, append(h.globals(), "start", id)...); rc != 0 {
				t.Fatalf("start exit %d", rc)
			}
			if n := len(h.calls()); n != before {
				t.Fatalf("start reached the runtime (%d calls, was %d)", n, before)
			}
			// delete goes to the runtime and clears the record; a later start would too.
			delArgs := append(h.globals(), "delete", "--force", id)
			if rc, _ := h.wrapper(nil, delArgs...); rc != 0 {
				t.Fatalf("delete exit %d", rc)
			}
			calls = h.calls()
			if last := calls[len(calls)-1]; !slices.Equal(last.args, delArgs) {
				t.Fatalf("delete not passed through: %q", last.args)
			}
			if isRestored(config{StateDir: h.state}, id) {
				t.Fatal("record left after delete")
			}
			h.wrapper(nil, append(h.globals(), "start", id)...)
			if last := h.calls()[len(h.calls())-1]; last.args[len(last.args)-2] != "start" {
				t.Fatalf("start after delete did not reach the runtime: %q", last.args)
			}
		})
	}
}

func TestRestoreKeepsConnectionsWhenAskedAndAddsCRIU(t *testing.T) {
	h := newHarness(t)
	h.writeConfig(appAnnotations())
	rf := defaultRestoreFile()
	rf["tcpClose"] = false
	h.stage("rst-1", rf, "app")
	if rc, _ := h.wrapper([]string{"CKPT_RUNC_CRIU=/opt/criu/criu"}, h.createArgs("c1")...); rc != 0 {
		t.Fatalf("exit %d: %s", rc, h.lastLogError())
	}
	got := h.commandCalls()[0].args
	if got[0] != "--criu" || got[1] != "/opt/criu/criu" || !slices.Contains(got, "--tcp-established") {
		t.Fatalf("argv %q", got)
	}
	spec, err := readSpec(h.bundle)
	must(t, err)
	if _, ok := spec.Annotations[annCRIUConfig]; ok {
		t.Errorf("config.json got a CRIU configuration without tcp-close")
	}
}

func TestRestoreFailureIsLoggedAndNotRecorded(t *testing.T) {
	h := newHarness(t)
	h.writeConfig(appAnnotations())
	h.stage("rst-1", defaultRestoreFile(), "app")
	rc, _ := h.wrapper([]string{"FAKE_RESTORE_FAIL=criu failed: type NS errno 0"}, h.createArgs("c1")...)
	if rc != 3 {
		t.Fatalf("exit %d, want the runtime's 3", rc)
	}
	msg := h.lastLogError()
	for _, want := range []string{"ckpt-runc: restore rst-1 container app", "criu failed: type NS errno 0", "restore.log"} {
		if !strings.Contains(msg, want) {
			t.Errorf("logged error %q lacks %q", msg, want)
		}
	}
	if isRestored(config{StateDir: h.state}, "c1") {
		t.Error("a failed restore was recorded")
	}
}

func TestRefusals(t *testing.T) {
	cases := []struct {
		name    string
		ann     func(map[string]string)
		rf      func(map[string]any)
		setup   func(h *harness, dir string)
		wantErr string
	}{
		{name: "namespace mismatch", rf: func(rf map[string]any) { rf["namespace"] = "other" },
			wantErr: "staged for pod other/counter-restored, refusing it to pod demo/counter-restored"},
		{name: "pod name mismatch", rf: func(rf map[string]any) { rf["podName"] = "someone-else" },
			wantErr: "staged for pod demo/someone-else"},
		{name: "restore id mismatch", rf: func(rf map[string]any) { rf["restoreId"] = "rst-2" },
			wantErr: `restore.json names restore "rst-2"`},
		{name: "restore id traversal", ann: func(a map[string]string) { a[annRestore] = ".." },
			wantErr: "is not a plain name"},
		{name: "restore id with slash", ann: func(a map[string]string) { a[annRestore] = "../restores/rst-1" },
			wantErr: "is not a plain name"},
		{name: "not staged", ann: func(a map[string]string) { a[annRestore] = "rst-9" },
			wantErr: "restore rst-9 is not staged on this node"},
		{name: "unknown container type", ann: func(a map[string]string) { delete(a, annContainerType) },
			wantErr: `container type ""`},
		{name: "missing pod annotations", ann: func(a map[string]string) { delete(a, annSandboxNamespace) },
			wantErr: "lacks the container name, pod name or namespace"},
		{name: "newer restore.json", rf: func(rf map[string]any) { rf["version"] = 2 },
			wantErr: "restore.json version 2"},
		{name: "images path climbs out", rf: func(rf map[string]any) {
			rf["containers"].(map[string]any)["app"].(map[string]any)["images"] = "../../etc"
		}, wantErr: `climbs out`},
		{name: "images symlink escape", setup: func(h *harness, dir string) {
			img := filepath.Join(dir, "containers", "app", "images")
			must(h.t, os.RemoveAll(img))
			must(h.t, os.Symlink(h.dir, img))
		}, wantErr: "images folder containers/app/images"},
		{name: "rootfs diff symlink escape", setup: func(h *harness, dir string) {
			outside := filepath.Join(h.dir, "outside")
			must(h.t, os.MkdirAll(outside, 0o755))
			must(h.t, os.WriteFile(filepath.Join(outside, "payload"), []byte("x"), 0o644))
			diff := filepath.Join(dir, "containers", "app", "rootfs-diff")
			must(h.t, os.Remove(diff))
			must(h.t, os.Symlink(outside, diff))
		}, wantErr: "rootfs diff containers/app/rootfs-diff"},
		{name: "staged folder is a symlink", setup: func(h *harness, dir string) {
			real := filepath.Join(h.dir, "elsewhere")
			must(h.t, os.Rename(dir, real))
			must(h.t, os.Symlink(real, dir))
		}, wantErr: "restore rst-1 is not staged on this node"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ann := appAnnotations()
			if tc.ann != nil {
				tc.ann(ann)
			}
			h.writeConfig(ann)
			rf := defaultRestoreFile()
			if tc.rf != nil {
				tc.rf(rf)
			}
			dir := h.stage("rst-1", rf, "app")
			if tc.setup != nil {
				tc.setup(h, dir)
			}
			rc, _ := h.wrapper(nil, h.createArgs("c1")...)
			if rc == 0 {
				t.Fatal("create succeeded")
			}
			if calls := h.commandCalls(); len(calls) != 0 {
				t.Fatalf("the runtime was called: %q", calls[0].args)
			}
			if msg := h.lastLogError(); !strings.Contains(msg, tc.wantErr) || !strings.HasPrefix(msg, "ckpt-runc: ") {
				t.Fatalf("logged error %q, want it to contain %q", msg, tc.wantErr)
			}
			if _, err := os.Stat(filepath.Join(h.bundle, "rootfs", "payload")); err == nil {
				t.Fatal("content from outside the staged folder was copied")
			}
		})
	}
}

func TestGPUHookRunsWithThePIDAndFailureUndoesTheCreate(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run("fail="+strconv.FormatBool(fail), func(t *testing.T) {
			h := newHarness(t)
			h.writeConfig(appAnnotations())
			rf := defaultRestoreFile()
			rf["containers"].(map[string]any)["app"].(map[string]any)["gpu"] = true
			h.stage("rst-1", rf, "app")
			hook := filepath.Join(h.dir, "ckpt-cuda-restore")
			script := "#!/bin/sh\necho \"$1 $CKPT_RESTORE_ID $CKPT_CONTAINER_NAME $CKPT_CONTAINER_ID\" > " + filepath.Join(h.dir, "hook.out") + "\n"
			if fail {
				script += "echo 'cuCheckpointProcessRestore: CUDA_ERROR_ILLEGAL_STATE' >&2\nexit 2\n"
			}
			must(t, os.WriteFile(hook, []byte(script), 0o755))
			rc, _ := h.wrapper([]string{"CKPT_RUNC_GPU_HOOK=" + hook}, h.createArgs("gpu1")...)
			out, err := os.ReadFile(filepath.Join(h.dir, "hook.out"))
			must(t, err)
			if string(out) != "4242 rst-1 app gpu1\n" {
				t.Errorf("hook saw %q", out)
			}
			calls := h.commandCalls()
			if !fail {
				if rc != 0 || len(calls) != 1 || !isRestored(config{StateDir: h.state}, "gpu1") {
					t.Fatalf("rc %d calls %d: %s", rc, len(calls), h.lastLogError())
				}
				return
			}
			if rc == 0 {
				t.Fatal("create succeeded with a failed GPU hook")
			}
			if !strings.Contains(h.lastLogError(), "CUDA_ERROR_ILLEGAL_STATE") {
				t.Errorf("hook failure not reported: %q", h.lastLogError())
			}
			last := calls[len(calls)-1].args
			if !slices.Equal(last, append(h.globals(), "delete", "--force", "gpu1")) {
				t.Errorf("restored container not removed: %q", last)
			}
			if isRestored(config{StateDir: h.state}, "gpu1") {
				t.Error("recorded as restored")
			}
		})
	}
}

func TestConfigFileNamesTheRuntime(t *testing.T) {
	h := newHarness(t)
	conf := filepath.Join(h.dir, "ckpt-runc.conf")
	must(t, os.WriteFile(conf, []byte("# next runtime\nruntime = "+h.runc+"\nstaging_root=/var/lib/ckpt/restores\n"), 0o644))
	env := []string{"CKPT_RUNC_CONFIG=" + conf, "CKPT_RUNC_RUNTIME="}
	if rc, _ := h.wrapper(env, append(h.globals(), "features")...); rc != 0 {
		t.Fatalf("exit %d", rc)
	}
	if calls := h.calls(); len(calls) != 1 || calls[0].args[len(calls[0].args)-1] != "features" {
		t.Fatalf("calls %+v", calls)
	}
	must(t, os.WriteFile(conf, []byte("runtme = runc\n"), 0o644))
	if rc, _ := h.wrapper(env, append(h.globals(), "features")...); rc == 0 {
		t.Fatal("a misspelt key was accepted")
	}
	if msg := h.lastLogError(); !strings.Contains(msg, "line 1") {
		t.Errorf("logged %q", msg)
	}
}

func TestRefusesToExecItself(t *testing.T) {
	h := newHarness(t)
	rc, _ := h.wrapper([]string{"CKPT_RUNC_RUNTIME=" + os.Args[0]}, append(h.globals(), "state", "x")...)
	if rc == 0 || !strings.Contains(h.lastLogError(), "is ckpt-runc itself") {
		t.Fatalf("exit %d, logged %q", rc, h.lastLogError())
	}
}
