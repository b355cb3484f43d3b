// Command repro is the one binary of repro: the service (serve, worker) and its
// command-line client (submit, logs, runs, admin). It holds flag parsing and wiring
// only; the logic lives in the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time (-ldflags "-X main.version=...") or read from the VCS stamp.
var version = ""

func reproVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "dev"
}

const usage = `repro runs training scripts reproducibly and archives everything about each run.

Service:
  repro serve     the API with an in-process worker (SQLite state, MinIO or local archive)
  repro worker    a worker alone, sharing serve's data directory

Client (REPRO_URL, default http://127.0.0.1:8080; REPRO_TOKEN):
  repro submit --env NAME [--follow] FILE... -- CMD...
  repro logs ID [--follow]
  repro runs [--state STATE] [--limit N]
  repro cancel ID
  repro admin team create NAME
  repro admin token create --team NAME
  repro tasks list | bundle ID [--hints 1,2] [-o FILE]
  repro submit --task ID [--follow] FILE...
  repro verify --task ID [--runs N] FILE... | --candidate-run ID
                                    verify a record claim: N interleaved A/B runs, a verdict
  repro verify status ID | report ID [--markdown]
  repro audit --run ID | --verification ID [--time-tolerance F]
                                    re-run archived runs and compare: reproduced or drifted
  repro audit status ID | report ID [--markdown]
  repro agent --task ID --env NAME [--hints 1,2] [--llm NAME] [--max-attempts N] [FILE...] -- CMD...
                                    an agent iterating on a task within a budget; scored by its best attempt
  repro agent status ID | report ID [--markdown]

Local (on a worker host):
  repro tasks sync [--from DIR]     fetch and verify the tasks' pinned files
  repro tasks calibrate ID --runs K measure a task's reference times on this worker's profile
  repro data verify DIR | synth DIR token shards: sha256 manifest, or synthetic shards
  repro images list | build NAME | inspect NAME | gc --watermark SIZE | lock NAME --catalog DIR
                                    the pinned environment catalogue on this host's Docker engine

  repro version

Run 'repro COMMAND -h' for a command's flags; every flag of serve and worker has a
REPRO_* environment twin (--s3-endpoint ↔ REPRO_S3_ENDPOINT).
`

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err == nil {
		return
	}
	var ue usageError
	var ec exitCode
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, &ec):
		os.Exit(int(ec))
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "repro: %s\n", ue.msg)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "repro: %s\n", err)
		os.Exit(1)
	}
}

// exitCode ends the program with a status and no message (already printed).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return usageError{"no command given"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, rest, true)
	case "worker":
		return serve(ctx, rest, false)
	case "submit":
		return submit(ctx, rest)
	case "logs":
		return logs(ctx, rest)
	case "runs":
		return runs(ctx, rest)
	case "cancel":
		return cancel(ctx, rest)
	case "admin":
		return admin(ctx, rest)
	case "tasks":
		return tasksCmd(ctx, rest)
	case "data":
		return dataCmd(ctx, rest)
	case "images":
		return imagesCmd(ctx, rest)
	case "verify":
		return verifyCmd(ctx, args[1:])
	case "audit":
		return auditCmd(ctx, args[1:])
	case "agent":
		return agentCmd(ctx, args[1:])
	case "version":
		fmt.Println(reproVersion())
		return nil
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	fmt.Fprint(os.Stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}
