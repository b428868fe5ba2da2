package main

import (
	"fmt"
	"strconv"
	"strings"
)

// invocation is a runtime command line as containerd's runc shim (go-runc) writes it:
// global options, a command, then the command's options and arguments.
type invocation struct {
	args      []string // everything after argv[0], untouched
	globals   []string // the global options as given, before the command
	logPath   string   // --log
	logFormat string   // --log-format
	hasCRIU   bool     // --criu was given
	command   string   // "" when only global options were given (--version, --help)
	cmdArgs   []string // after the command
}

// runc's global options that take a value (urfave/cli v1 accepts -x, --x, -x=v and --x=v).
var globalValueFlags = map[string]bool{"log": true, "log-format": true, "root": true, "criu": true, "rootless": true}

func flagName(arg string) (name, value string, hasValue bool) {
	name = strings.TrimLeft(arg, "-")
	if i := strings.IndexByte(name, '='); i >= 0 {
		return name[:i], name[i+1:], true
	}
	return name, "", false
}

func parseInvocation(args []string) invocation {
	inv := invocation{args: args}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			inv.globals = args[:i]
			inv.command = arg
			inv.cmdArgs = args[i+1:]
			return inv
		}
		if arg == "--" {
			break
		}
		name, value, hasValue := flagName(arg)
		if globalValueFlags[name] && !hasValue && i+1 < len(args) {
			i++
			value = args[i]
		}
		switch name {
		case "log":
			inv.logPath = value
		case "log-format":
			inv.logFormat = value
		case "criu":
			inv.hasCRIU = true
		}
	}
	inv.globals = args
	return inv
}

// createArgs are the options of `runc create` (runc 1.1 and later).
type createArgs struct {
	bundle        string
	pidFile       string
	consoleSocket string
	noPivot       bool
	noNewKeyring  bool
	preserveFDs   int
	id            string
}

func parseCreate(args []string) (createArgs, error) {
	ca := createArgs{bundle: "."}
	var positional []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			positional = append(positional, args[i:]...)
			break
		}
		name, value, hasValue := flagName(arg)
		needsValue := func() (string, error) {
			if hasValue {
				return value, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("create option %s needs a value", arg)
			}
			i++
			return args[i], nil
		}
		var err error
		switch name {
		case "bundle", "b":
			ca.bundle, err = needsValue()
		case "pid-file":
			ca.pidFile, err = needsValue()
		case "console-socket":
			ca.consoleSocket, err = needsValue()
		case "preserve-fds":
			var v string
			if v, err = needsValue(); err == nil {
				ca.preserveFDs, err = strconv.Atoi(v)
			}
		case "no-pivot":
			ca.noPivot = !hasValue || value == "true"
		case "no-new-keyring":
			ca.noNewKeyring = !hasValue || value == "true"
		default:
			return ca, fmt.Errorf("unknown create option %s", arg)
		}
		if err != nil {
			return ca, err
		}
	}
	if len(positional) != 1 {
		return ca, fmt.Errorf("create wants exactly one container id, got %q", positional)
	}
	ca.id = positional[0]
	return ca, nil
}

// containerID is the first argument of a command that is not an option: the container id
// of start, delete, state, kill... ("" if none). delete's only option (--force) and start,
// which has none, take no value.
func containerID(cmdArgs []string) string {
	for _, a := range cmdArgs {
		if !strings.HasPrefix(a, "-") {
			return a
		}
	}
	return ""
}
