package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// shortDir returns a folder whose "run/gpu-restore.sock" fits a unix socket path (108
// bytes with the NUL; 104 on some systems).
func shortDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if len(filepath.Join(dir, "run", "gpu-restore.sock")) < 100 {
		return dir
	}
	dir, err := os.MkdirTemp("", "cr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// agent is a fake ckpt GPU agent: for each connection it reads one request line, records
// it, and calls answer, which writes the reply (or not) on conn.
type agent struct {
	sock     string
	mu       sync.Mutex
	requests []string
	errs     []string
}

func (a *agent) lines() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.requests...)
}

func startAgent(t *testing.T, sock string, answer func(conn net.Conn, req map[string]any)) *agent {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{sock: sock}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				// Unblocks a handler that never answers once the test ends.
				go func() { <-done; conn.Close() }()
				line, err := bufio.NewReader(conn).ReadString('\n')
				var req map[string]any
				a.mu.Lock()
				a.requests = append(a.requests, line)
				if err != nil {
					a.errs = append(a.errs, "read request: "+err.Error())
				} else {
					d := json.NewDecoder(strings.NewReader(line))
					d.UseNumber()
					if err := d.Decode(&req); err != nil {
						a.errs = append(a.errs, "decode request: "+err.Error())
					}
				}
				a.mu.Unlock()
				answer(conn, req)
			}()
		}
	}()
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
		for _, e := range a.errs {
			t.Errorf("fake agent: %s", e)
		}
	})
	return a
}

func answerWith(s string) func(net.Conn, map[string]any) {
	return func(conn net.Conn, _ map[string]any) { conn.Write([]byte(s)) }
}

func baseEnv(sock string, extra ...string) func(string) string {
	m := map[string]string{
		"CKPT_RESTORE_ID":         "r-1",
		"CKPT_CONTAINER_NAME":     "trainer",
		"CKPT_CONTAINER_ID":       "abc123",
		"CKPT_GPU_RESTORE_SOCKET": sock,
	}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return func(k string) string { return m[k] }
}

func runHook(args []string, env func(string) string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, env, &out, &errb)
	return code, out.String(), errb.String()
}

// checkRequest asserts the request line is exactly the four fields, pid as a number.
func checkRequest(t *testing.T, line string, pid string) {
	t.Helper()
	if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("request %q is not one line ending in a newline", line)
	}
	d := json.NewDecoder(strings.NewReader(line))
	d.UseNumber()
	var req map[string]any
	if err := d.Decode(&req); err != nil {
		t.Fatalf("request %q: %v", line, err)
	}
	want := map[string]any{
		"restoreId":   "r-1",
		"container":   "trainer",
		"containerId": "abc123",
		"pid":         json.Number(pid),
	}
	if len(req) != len(want) {
		t.Errorf("request %q: got %d fields, want %d", line, len(req), len(want))
	}
	for k, v := range want {
		if req[k] != v {
			t.Errorf("request %q: %s = %#v, want %#v", line, k, req[k], v)
		}
	}
}

func TestSuccess(t *testing.T) {
	sock := filepath.Join(shortDir(t), "a.sock")
	a := startAgent(t, sock, answerWith(`{"restored": [1234, 1240], "error": null}`+"\n"))
	code, out, errs := runHook([]string{"1234"}, baseEnv(sock))
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	if want := "ckpt-cuda-restore: CUDA state restored and unlocked for pids 1234 1240\n"; out != want {
		t.Errorf("stdout %q, want %q", out, want)
	}
	if errs != "" {
		t.Errorf("stderr %q, want nothing", errs)
	}
	reqs := a.lines()
	if len(reqs) != 1 {
		t.Fatalf("agent got %d requests, want 1", len(reqs))
	}
	checkRequest(t, reqs[0], "1234")
}

func TestSuccessNoCUDAProcess(t *testing.T) {
	for _, r := range []string{`{"restored": [], "error": null}`, `{"restored": []}`} {
		sock := filepath.Join(shortDir(t), "a.sock")
		startAgent(t, sock, answerWith(r+"\n"))
		code, out, errs := runHook([]string{"77"}, baseEnv(sock))
		if code != 0 {
			t.Fatalf("reply %s: exit %d, stderr %q", r, code, errs)
		}
		if want := "ckpt-cuda-restore: no CUDA process in container abc123\n"; out != want {
			t.Errorf("reply %s: stdout %q, want %q", r, out, want)
		}
	}
}

func TestAgentError(t *testing.T) {
	sock := filepath.Join(shortDir(t), "a.sock")
	a := startAgent(t, sock, answerWith(`{"restored": [], "error": "cuCheckpointProcessRestore(1234): CUDA_ERROR_INVALID_VALUE"}`+"\n"))
	code, out, errs := runHook([]string{"1234"}, baseEnv(sock))
	if code != 1 {
		t.Fatalf("exit %d, want 1 (stderr %q)", code, errs)
	}
	if want := "ckpt-cuda-restore: agent refused: cuCheckpointProcessRestore(1234): CUDA_ERROR_INVALID_VALUE\n"; errs != want {
		t.Errorf("stderr %q, want %q", errs, want)
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
	checkRequest(t, a.lines()[0], "1234")
}

func TestAgentCloses(t *testing.T) {
	sock := filepath.Join(shortDir(t), "a.sock")
	a := startAgent(t, sock, func(net.Conn, map[string]any) {})
	code, _, errs := runHook([]string{"1234"}, baseEnv(sock))
	if code != 1 {
		t.Fatalf("exit %d, want 1 (stderr %q)", code, errs)
	}
	if want := "ckpt-cuda-restore: the ckpt GPU agent at " + sock + " closed the connection without a reply\n"; errs != want {
		t.Errorf("stderr %q, want %q", errs, want)
	}
	checkRequest(t, a.lines()[0], "1234")
}

func TestMalformedReply(t *testing.T) {
	for _, tc := range []struct{ reply, want string }{
		{"hello\n", "malformed reply from the ckpt GPU agent"},
		{"[1, 2]\n", "malformed reply from the ckpt GPU agent"},
		{"null\n", "not a JSON object"},
		{`{"restored": [1], "error": null} trailing` + "\n", "malformed reply"},
		{`{"restored": ["1"], "error": null}` + "\n", "malformed reply"},
		{`{"restored": [1], "error": 5}` + "\n", "malformed reply"},
		{`{"error": null}` + "\n", `no "restored" list and no "error"`},
		{`{"restored": null}` + "\n", `no "restored" list and no "error"`},
		{`{"restored": [0]}` + "\n", `pid 0 in "restored"`},
		{`{"restored": [1234]`, "closed the connection in the middle of its reply"},
		{strings.Repeat("x", maxReply+10), "no end of line within 65536 bytes"},
	} {
		sock := filepath.Join(shortDir(t), "a.sock")
		startAgent(t, sock, answerWith(tc.reply))
		code, out, errs := runHook([]string{"1234"}, baseEnv(sock))
		if code != 1 {
			t.Errorf("reply %.40q: exit %d, want 1 (stderr %q)", tc.reply, code, errs)
		}
		if !strings.HasPrefix(errs, "ckpt-cuda-restore: ") || !strings.Contains(errs, tc.want) {
			t.Errorf("reply %.40q: stderr %q, want it to contain %q", tc.reply, errs, tc.want)
		}
		if len(errs) > 1000 {
			t.Errorf("reply %.40q: stderr is %d bytes long", tc.reply, len(errs))
		}
		if out != "" {
			t.Errorf("reply %.40q: stdout %q, want nothing", tc.reply, out)
		}
	}
}

func TestEmptyErrorMessage(t *testing.T) {
	sock := filepath.Join(shortDir(t), "a.sock")
	startAgent(t, sock, answerWith(`{"restored": [1], "error": ""}`+"\n"))
	code, _, errs := runHook([]string{"1234"}, baseEnv(sock))
	if code != 1 || errs != "ckpt-cuda-restore: agent refused: (empty error message)\n" {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

func TestNoAnswer(t *testing.T) {
	sock := filepath.Join(shortDir(t), "a.sock")
	a := startAgent(t, sock, func(conn net.Conn, _ map[string]any) {
		conn.Read(make([]byte, 1)) // blocks until the hook or the test closes conn
	})
	start := time.Now()
	code, _, errs := runHook([]string{"1234"}, baseEnv(sock, "CKPT_GPU_RESTORE_TIMEOUT", "200ms"))
	took := time.Since(start)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (stderr %q)", code, errs)
	}
	if want := "ckpt-cuda-restore: no answer from the ckpt GPU agent within 200ms\n"; errs != want {
		t.Errorf("stderr %q, want %q", errs, want)
	}
	if took < 200*time.Millisecond || took > 10*time.Second {
		t.Errorf("took %s, want about 200ms", took)
	}
	checkRequest(t, a.lines()[0], "1234")
}

func TestNoSocket(t *testing.T) {
	sock := filepath.Join(shortDir(t), "missing.sock")
	code, out, errs := runHook([]string{"1234"}, baseEnv(sock))
	if code != 1 {
		t.Fatalf("exit %d, want 1 (stderr %q)", code, errs)
	}
	prefix := "ckpt-cuda-restore: cannot reach the ckpt GPU agent at " + sock + ": "
	suffix := " (is ckpt-agent-gpu running on this node?)\n"
	if !strings.HasPrefix(errs, prefix) || !strings.HasSuffix(errs, suffix) || !strings.Contains(errs, "no such file or directory") {
		t.Errorf("stderr %q, want %q...no such file or directory...%q", errs, prefix, suffix)
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
}

func TestConnectionRefused(t *testing.T) {
	sock := filepath.Join(shortDir(t), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // leaves a socket file nobody listens on, as a dead agent does
	ln.Close()
	code, _, errs := runHook([]string{"1234"}, baseEnv(sock))
	if code != 1 || !strings.HasPrefix(errs, "ckpt-cuda-restore: cannot reach the ckpt GPU agent at "+sock+": ") ||
		!strings.Contains(errs, "connection refused") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}

func TestUsage(t *testing.T) {
	sock := "/nonexistent/never-dialled.sock"
	for _, tc := range []struct {
		name string
		args []string
		env  func(string) string
		want string
	}{
		{"no args", nil, baseEnv(sock), "want exactly one argument"},
		{"two args", []string{"1", "2"}, baseEnv(sock), "want exactly one argument"},
		{"non-numeric", []string{"abc"}, baseEnv(sock), `pid "abc" is not a positive decimal integer`},
		{"empty", []string{""}, baseEnv(sock), `pid "" is not a positive decimal integer`},
		{"zero", []string{"0"}, baseEnv(sock), `pid "0" is not a positive decimal integer`},
		{"negative", []string{"-5"}, baseEnv(sock), `pid "-5" is not a positive decimal integer`},
		{"plus sign", []string{"+5"}, baseEnv(sock), `pid "+5" is not a positive decimal integer`},
		{"overflow", []string{"99999999999999999999"}, baseEnv(sock), "is not a positive decimal integer"},
		{"no restore id", []string{"1"}, baseEnv(sock, "CKPT_RESTORE_ID", ""), "CKPT_RESTORE_ID is not set"},
		{"no container name", []string{"1"}, baseEnv(sock, "CKPT_CONTAINER_NAME", ""), "CKPT_CONTAINER_NAME is not set"},
		{"no container id", []string{"1"}, baseEnv(sock, "CKPT_CONTAINER_ID", ""), "CKPT_CONTAINER_ID is not set"},
		{"bad timeout", []string{"1"}, baseEnv(sock, "CKPT_GPU_RESTORE_TIMEOUT", "soon"), "CKPT_GPU_RESTORE_TIMEOUT"},
		{"zero timeout", []string{"1"}, baseEnv(sock, "CKPT_GPU_RESTORE_TIMEOUT", "0s"), "CKPT_GPU_RESTORE_TIMEOUT"},
	} {
		code, out, errs := runHook(tc.args, tc.env)
		if code != 2 {
			t.Errorf("%s: exit %d, want 2 (stderr %q)", tc.name, code, errs)
		}
		if !strings.HasPrefix(errs, "ckpt-cuda-restore: ") || !strings.Contains(errs, tc.want) {
			t.Errorf("%s: stderr %q, want it to start with %q and contain %q", tc.name, errs, "ckpt-cuda-restore: ", tc.want)
		}
		if out != "" {
			t.Errorf("%s: stdout %q, want nothing", tc.name, out)
		}
	}
}

func TestSocketPath(t *testing.T) {
	exe := func() (string, error) { return "/var/lib/ckpt/bin/ckpt-cuda-restore", nil }
	got, err := socketPath(baseEnv(""), exe)
	if err != nil || got != "/var/lib/ckpt/run/gpu-restore.sock" {
		t.Errorf("default: %q, %v", got, err)
	}
	got, err = socketPath(baseEnv("/x/agent.sock"), exe)
	if err != nil || got != "/x/agent.sock" {
		t.Errorf("from the environment: %q, %v", got, err)
	}
	_, err = socketPath(baseEnv(""), func() (string, error) { return "", errors.New("no /proc") })
	if err == nil || !strings.Contains(err.Error(), "CKPT_GPU_RESTORE_SOCKET") {
		t.Errorf("no executable: %v", err)
	}
}

// TestBinary builds ckpt-cuda-restore and runs it as the wrapper does, with the socket at
// its default place next to the binary, to check main's exit statuses end to end.
func TestBinary(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not found on PATH: %v", err)
	}
	dir := shortDir(t)
	bin := filepath.Join(dir, "bin", "ckpt-cuda-restore")
	build := exec.Command(gobin, "build", "-trimpath", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	a := startAgent(t, filepath.Join(dir, "run", "gpu-restore.sock"), func(conn net.Conn, req map[string]any) {
		if req["pid"] == json.Number("666") {
			conn.Write([]byte(`{"restored": [], "error": "no such process"}` + "\n"))
			return
		}
		conn.Write([]byte(`{"restored": [4242], "error": null}` + "\n"))
	})
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CKPT_") {
			env = append(env, kv)
		}
	}
	env = append(env, "CKPT_RESTORE_ID=r-1", "CKPT_CONTAINER_NAME=trainer", "CKPT_CONTAINER_ID=abc123")

	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"4242"}, 0, "ckpt-cuda-restore: CUDA state restored and unlocked for pids 4242\n", ""},
		{[]string{"666"}, 1, "", "ckpt-cuda-restore: agent refused: no such process\n"},
		{nil, 2, "", "ckpt-cuda-restore: want exactly one argument"},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if code != tc.code || out.String() != tc.stdout || !strings.HasPrefix(errb.String(), tc.stderr) ||
			(tc.stderr == "" && errb.Len() > 0) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr %q",
				tc.args, code, out.String(), errb.String(), tc.code, tc.stdout, tc.stderr)
		}
	}
	reqs := a.lines()
	if len(reqs) != 2 {
		t.Fatalf("agent got %d requests, want 2", len(reqs))
	}
	checkRequest(t, reqs[0], "4242")
	checkRequest(t, reqs[1], "666")
}
