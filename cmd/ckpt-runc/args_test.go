package main

import (
	"slices"
	"testing"
)

func TestParseInvocation(t *testing.T) {
	inv := parseInvocation([]string{"--root=/run/r", "-log", "/l", "--log-format", "json", "--systemd-cgroup", "create", "--bundle", "/b", "id"})
	if inv.command != "create" || inv.logPath != "/l" || inv.logFormat != "json" || inv.hasCRIU {
		t.Fatalf("%+v", inv)
	}
	if !slices.Equal(inv.globals, []string{"--root=/run/r", "-log", "/l", "--log-format", "json", "--systemd-cgroup"}) {
		t.Errorf("globals %q", inv.globals)
	}
	if !slices.Equal(inv.cmdArgs, []string{"--bundle", "/b", "id"}) {
		t.Errorf("cmdArgs %q", inv.cmdArgs)
	}
	if inv := parseInvocation([]string{"--version"}); inv.command != "" || len(inv.globals) != 1 {
		t.Errorf("--version: %+v", inv)
	}
	if inv := parseInvocation([]string{"--criu", "/c", "restore", "x"}); !inv.hasCRIU || inv.command != "restore" {
		t.Errorf("--criu: %+v", inv)
	}
}

func TestParseCreate(t *testing.T) {
	ca, err := parseCreate([]string{"-b", "/b", "--pid-file=/p", "--console-socket", "/s", "--no-pivot", "--no-new-keyring", "--preserve-fds", "2", "cid"})
	if err != nil {
		t.Fatal(err)
	}
	want := createArgs{bundle: "/b", pidFile: "/p", consoleSocket: "/s", noPivot: true, noNewKeyring: true, preserveFDs: 2, id: "cid"}
	if ca != want {
		t.Errorf("got %+v, want %+v", ca, want)
	}
	for _, bad := range [][]string{{"--bundle"}, {"--detach", "x"}, {"a", "b"}, {}} {
		if _, err := parseCreate(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got := containerID([]string{"--force", "cid"}); got != "cid" {
		t.Errorf("containerID %q", got)
	}
}
