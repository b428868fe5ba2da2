// Command ckpt-cuda-restore is ckpt-runc's GPU restore hook: `ckpt-cuda-restore PID`, run
// after `runc restore` of a GPU container with CKPT_RESTORE_ID, CKPT_CONTAINER_NAME and
// CKPT_CONTAINER_ID set. Hosts have neither Python nor cgo, so it does not call CUDA
// itself: it asks the node's ckpt GPU agent, which holds the driver API, to restore and
// unlock the CUDA processes of the container, over a unix stream socket:
//
//	request (one line): {"restoreId":"...","container":"...","containerId":"...","pid":1234}
//	reply (one line):   {"restored":[1234,1240],"error":null} or {"restored":[],"error":"..."}
//
// The socket is $CKPT_GPU_RESTORE_SOCKET, else <dir of the executable>/../run/gpu-restore.sock
// (/var/lib/ckpt/run/gpu-restore.sock for /var/lib/ckpt/bin/ckpt-cuda-restore). The whole
// exchange must end within $CKPT_GPU_RESTORE_TIMEOUT (default 4m30s).
//
// Exit status: 0 restored, 1 failure (agent unreachable or refused, bad reply, timeout),
// 2 usage.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	prog = "ckpt-cuda-restore"

	// Shorter than the wrapper's 5m hook timeout, so that the wrapper gets our message
	// rather than a bare kill.
	defaultTimeout = 4*time.Minute + 30*time.Second

	maxReply = 64 << 10
)

type request struct {
	RestoreID   string `json:"restoreId"`
	Container   string `json:"container"`
	ContainerID string `json:"containerId"`
	PID         int    `json:"pid"`
}

type reply struct {
	Restored []int   `json:"restored"`
	Error    *string `json:"error"`
}

// errUsage marks an error that exits with status 2.
type errUsage struct{ msg string }

func (e errUsage) Error() string { return e.msg }

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is the whole hook; it returns the exit status.
func run(args []string, env func(string) string, stdout, stderr io.Writer) int {
	req, timeout, err := parse(args, env)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		fmt.Fprintf(stderr, "usage: %s PID (with CKPT_RESTORE_ID, CKPT_CONTAINER_NAME, CKPT_CONTAINER_ID set)\n", prog)
		return 2
	}
	sock, err := socketPath(env, os.Executable)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	rep, err := exchange(sock, req, timeout)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	if rep.Error != nil {
		msg := *rep.Error
		if msg == "" {
			msg = "(empty error message)"
		}
		fmt.Fprintf(stderr, "%s: agent refused: %s\n", prog, msg)
		return 1
	}
	if len(rep.Restored) == 0 {
		fmt.Fprintf(stdout, "%s: no CUDA process in container %s\n", prog, req.ContainerID)
		return 0
	}
	pids := make([]string, len(rep.Restored))
	for i, p := range rep.Restored {
		pids[i] = strconv.Itoa(p)
	}
	fmt.Fprintf(stdout, "%s: CUDA state restored and unlocked for pids %s\n", prog, strings.Join(pids, " "))
	return 0
}

// parse checks the arguments and environment; its errors are usage errors.
func parse(args []string, env func(string) string) (request, time.Duration, error) {
	var req request
	if len(args) != 1 {
		return req, 0, fmt.Errorf("want exactly one argument, the host pid of the container's init; got %d", len(args))
	}
	pid, err := parsePID(args[0])
	if err != nil {
		return req, 0, err
	}
	req.PID = pid
	for _, v := range []struct {
		name string
		dst  *string
	}{
		{"CKPT_RESTORE_ID", &req.RestoreID},
		{"CKPT_CONTAINER_NAME", &req.Container},
		{"CKPT_CONTAINER_ID", &req.ContainerID},
	} {
		*v.dst = env(v.name)
		if *v.dst == "" {
			return req, 0, fmt.Errorf("%s is not set", v.name)
		}
	}
	timeout := defaultTimeout
	if s := env("CKPT_GPU_RESTORE_TIMEOUT"); s != "" {
		timeout, err = time.ParseDuration(s)
		if err != nil || timeout <= 0 {
			return req, 0, fmt.Errorf("CKPT_GPU_RESTORE_TIMEOUT=%q is not a positive Go duration", s)
		}
	}
	return req, timeout, nil
}

// parsePID accepts digits only: strconv.Atoi alone would take "+5" and "-5".
func parsePID(s string) (int, error) {
	bad := fmt.Errorf("pid %q is not a positive decimal integer", s)
	if s == "" {
		return 0, bad
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, bad
		}
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, bad
	}
	return pid, nil
}

// socketPath returns the agent's socket; exe is os.Executable but for tests.
func socketPath(env func(string) string, exe func() (string, error)) (string, error) {
	if s := env("CKPT_GPU_RESTORE_SOCKET"); s != "" {
		return s, nil
	}
	path, err := exe()
	if err != nil {
		return "", fmt.Errorf("cannot locate the ckpt GPU agent's socket (set CKPT_GPU_RESTORE_SOCKET): %w", err)
	}
	return filepath.Join(filepath.Dir(filepath.Dir(path)), "run", "gpu-restore.sock"), nil
}

// exchange sends the request and reads the agent's reply, all before one deadline.
func exchange(sock string, req request, timeout time.Duration) (reply, error) {
	var rep reply
	deadline := time.Now().Add(timeout)
	noAnswer := fmt.Errorf("no answer from the ckpt GPU agent within %s", timeout)
	conn, err := (&net.Dialer{Deadline: deadline}).Dial("unix", sock)
	if err != nil {
		if isTimeout(err) {
			return rep, noAnswer
		}
		return rep, fmt.Errorf("cannot reach the ckpt GPU agent at %s: %v (is ckpt-agent-gpu running on this node?)", sock, err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return rep, fmt.Errorf("set a deadline on the connection to the ckpt GPU agent at %s: %v", sock, err)
	}
	line, err := json.Marshal(req)
	if err != nil {
		return rep, err
	}
	if _, err := conn.Write(append(line, '\n')); err != nil {
		if isTimeout(err) {
			return rep, noAnswer
		}
		return rep, fmt.Errorf("send the request to the ckpt GPU agent at %s: %v", sock, err)
	}
	got, err := bufio.NewReader(io.LimitReader(conn, maxReply)).ReadBytes('\n')
	switch {
	case err == nil:
	case isTimeout(err):
		return rep, noAnswer
	case errors.Is(err, io.EOF) && len(got) >= maxReply:
		return rep, fmt.Errorf("malformed reply from the ckpt GPU agent at %s: no end of line within %d bytes", sock, maxReply)
	case errors.Is(err, io.EOF) && len(got) == 0:
		return rep, fmt.Errorf("the ckpt GPU agent at %s closed the connection without a reply", sock)
	case errors.Is(err, io.EOF):
		return rep, fmt.Errorf("the ckpt GPU agent at %s closed the connection in the middle of its reply: %q", sock, clip(got))
	default:
		return rep, fmt.Errorf("read the reply of the ckpt GPU agent at %s: %v", sock, err)
	}
	if err := decodeReply(got, &rep); err != nil {
		return rep, fmt.Errorf("malformed reply from the ckpt GPU agent at %s: %v: %q", sock, err, clip(got))
	}
	return rep, nil
}

// decodeReply is strict about success: a reply without "restored" and without "error" is
// more likely a foreign or broken peer than a container without CUDA processes.
func decodeReply(line []byte, rep *reply) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		return err
	}
	if raw == nil {
		return errors.New("not a JSON object")
	}
	if err := json.Unmarshal(line, rep); err != nil {
		return err
	}
	if rep.Error != nil {
		return nil
	}
	if r, ok := raw["restored"]; !ok || bytes.Equal(bytes.TrimSpace(r), []byte("null")) {
		return errors.New(`no "restored" list and no "error"`)
	}
	for _, p := range rep.Restored {
		if p <= 0 {
			return fmt.Errorf("pid %d in \"restored\"", p)
		}
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// clip keeps error messages short: the wrapper keeps only the last 2000 characters.
func clip(b []byte) []byte {
	b = bytes.TrimRight(b, "\n")
	if len(b) > 200 {
		return append(b[:200:200], "..."...)
	}
	return b
}
