package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"
)

// logLine appends one line to the runtime log the shim gave with --log, in runc's format
// (logrus: JSON with level, msg, time when --log-format json, else text). On a failed
// command go-runc reads the last "error" entry of that file and containerd shows it as the
// container's error (`kubectl describe pod`), so refusals must land there. Errors go to
// stderr as well.
func logLine(inv invocation, level, msg string) {
	now := time.Now().UTC().Format(time.RFC3339Nano)
	var line []byte
	if inv.logFormat == "json" {
		line, _ = json.Marshal(map[string]string{"level": level, "msg": msg, "time": now})
	} else {
		line = fmt.Appendf(nil, "time=%q level=%s msg=%s", now, level, strconv.Quote(msg))
	}
	line = append(line, '\n')
	if level == "error" {
		os.Stderr.Write(line)
	}
	if inv.logPath == "" || inv.logPath == "/dev/stderr" {
		return
	}
	f, err := os.OpenFile(inv.logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	f.Write(line)
}

// lastLoggedError is the msg of the last JSON "error" entry in a runtime log ("" if none):
// the runtime's own reason, quoted in the wrapper's message so that it stays visible.
func lastLoggedError(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	last := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		var e struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Level == "error" {
			last = e.Msg
		}
	}
	return last
}
