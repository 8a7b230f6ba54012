// Command pgwarden is the PostgreSQL high-availability agent and its
// operator command line. It only parses flags and wires the packages
// together; the HA decisions live in package agent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/pgwarden/pgwarden/config"
)

// version is set at build time (-ldflags -X main.version=...).
var version = "0.1.0-dev"

// errUsage marks a command-line mistake (exit status 2).
var errUsage = errors.New("usage")

// env is what every command gets from main.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// ctx ends on SIGINT or SIGTERM.
	ctx context.Context
}

type command struct {
	name    string
	args    string
	summary string
	run     func(e *env, args []string) error
	hidden  bool
}

func commands() []command {
	return []command{
		{name: "agent", args: "-c FILE", summary: "run the agent for one node", run: cmdAgent},
		{name: "demo", args: "[--nodes 3] [--dir DIR] [--keep]", summary: "a whole local cluster on loopback with an embedded etcd", run: cmdDemo},
		{name: "list", args: "-c FILE [--format table|json] [--watch N]", summary: "members: role, state, timeline, lag; leader first", run: cmdList},
		{name: "switchover", args: "-c FILE [--leader N] [--candidate N] [--scheduled T] [--force] " + restFlagsUsage, summary: "planned, safe change of leader", run: cmdSwitchover},
		{name: "failover", args: "-c FILE --candidate N [--force] " + restFlagsUsage, summary: "manual failover, also when no leader is healthy", run: cmdFailover},
		{name: "pause", args: "-c FILE", summary: "maintenance mode: no automatic failover", run: cmdPause},
		{name: "resume", args: "-c FILE", summary: "leave maintenance mode", run: cmdResume},
		{name: "history", args: "-c FILE", summary: "timeline history", run: cmdHistory},
		{name: "show-config", args: "-c FILE", summary: "show the dynamic configuration kept in etcd", run: cmdShowConfig},
		{name: "edit-config", args: "-c FILE [--set k=v ...] [--force]", summary: "change the dynamic configuration", run: cmdEditConfig},
		{name: "restart", args: "-c FILE [NODE ...] [--pending] [--scheduled T] [--force] " + restFlagsUsage, summary: "restart PostgreSQL: now, at a time, or where a restart is pending", run: cmdRestart},
		{name: "reload", args: "-c FILE [NODE ...] [--force] " + restFlagsUsage, summary: "make PostgreSQL re-read its configuration", run: cmdReload},
		{name: "reinit", args: "-c FILE NODE [--force] " + restFlagsUsage, summary: "rebuild a replica from the leader", run: cmdReinit},
		{name: "topology", args: "-c FILE " + restFlagsUsage, summary: "the members as a tree of who streams from whom", run: cmdTopology},
		{name: "flush", args: "-c FILE [NODE ...] restart|switchover [--force] " + restFlagsUsage, summary: "cancel a scheduled restart or switchover", run: cmdFlush},
		{name: "dsn", args: "-c FILE [NODE] [--role leader|replica|any]", summary: "a member's connection string", run: cmdDSN},
		{name: "query", args: "-c FILE [NODE] [--role R] [-U USER] [-d DB] (--command SQL | --file FILE) [--format table|json]", summary: "run SQL on a member or the leader", run: cmdQuery},
		{name: "remove", args: "-c FILE", summary: "wipe a cluster's keys from etcd (asks to type the scope)", run: cmdRemove},
		{name: "check-config", args: "-c FILE", summary: "validate a configuration file and exit", run: cmdCheckConfig},
		{name: "backup", args: "create|list|verify|restore -c FILE ...", summary: "base backups, their list, verification and point-in-time restore", run: cmdBackup},
		{name: "version", summary: "version and build info", run: cmdVersion},
		{name: "completion", args: "bash|zsh", summary: "shell completion script, generated from this command table", run: cmdCompletion},
		{name: "man", summary: "the man page (roff), generated from this command table", run: cmdMan},
		{name: "watchdog", args: "--data-dir DIR", summary: "companion fencing process (started by the agent)", run: cmdWatchdog, hidden: true},
		{name: "handback", args: "-c FILE (lease on stdin)", summary: "delete this member's leader key (run by the watchdog after fencing for a dead agent)", run: cmdHandback, hidden: true},
		{name: "archive-push", args: "--pgbackrest-config FILE --stanza S PATH", summary: "archive_command (set by the agent)", run: cmdArchivePush, hidden: true},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(&env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, ctx: ctx}, os.Args[1:]))
}

// run executes one command line and returns the exit status.
func run(e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(e, args[1:])
		switch {
		case err == nil || errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(e.stderr, "pgwarden %s: %s (pgwarden %s --help for usage)\n", c.name, oneLine(err), c.name)
			return 2
		default:
			fmt.Fprintf(e.stderr, "pgwarden %s: %s\n", c.name, oneLine(err))
			return 1
		}
	}
	fmt.Fprintf(e.stderr, "pgwarden: unknown command %q (see pgwarden --help)\n", args[0])
	return 2
}

// oneLine keeps a multi-problem error on one line for the terminal.
func oneLine(err error) string {
	s := strings.TrimSuffix(err.Error(), ": "+errUsage.Error())
	return strings.ReplaceAll(s, "\n", "; ")
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "pgwarden: PostgreSQL high availability with etcd, a REST API and PgBouncer")
	fmt.Fprintln(w, "\nusage: pgwarden COMMAND [flags]   (pgwarden COMMAND --help for its flags)")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		if !c.hidden {
			fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
		}
	}
}

// flags makes a command's flag set: errors come back to run, --help prints
// the usage to stdout and exits 0.
func flags(e *env, name, args string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(e.stdout, "usage: pgwarden %s %s\n\nflags:\n", name, args)
		fs.SetOutput(e.stdout)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// parse parses args; a bad flag is a usage error. The flag package would
// print the usage itself on any error: only --help prints it, once.
func parse(fs *flag.FlagSet, args []string) error {
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return err
		}
		return fmt.Errorf("%v: %w", err, errUsage)
	}
	return nil
}

// parseInterleaved parses flags that may come after positional arguments
// (pgwarden restart -c FILE node2 --force) and returns the positionals.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// configEnv names the file the commands read when -c is not given.
const configEnv = "PGWARDEN_CONFIG"

// configFlag is the -c flag of every command, defaulting to $PGWARDEN_CONFIG.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("c", os.Getenv(configEnv), "configuration file (default $"+configEnv+")")
}

var errNoConfig = fmt.Errorf("-c FILE (or $%s) is required: %w", configEnv, errUsage)

// loadConfig reads a node's whole file; a missing -c is a usage error.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, errNoConfig
	}
	return config.Load(path)
}

// loadControl reads the file of an operator command: a node's file or a
// control-only one.
func loadControl(path string) (*config.Config, error) {
	if path == "" {
		return nil, errNoConfig
	}
	return config.LoadControl(path)
}

// newLogger is the one root logger; components take Named children.
func newLogger(c config.Log, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "pgwarden",
		Level:      hclog.LevelFromString(c.Level),
		JSONFormat: c.Format == "json",
		Output:     w,
	})
}

func cmdVersion(e *env, args []string) error {
	fs := flags(e, "version", "")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "pgwarden %s\n", version)
	fmt.Fprintf(e.stdout, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" || s.Key == "vcs.time" {
				fmt.Fprintf(e.stdout, "%s %s\n", s.Key, s.Value)
			}
		}
	}
	return nil
}
