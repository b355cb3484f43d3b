package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/repro/repro/openapi"
	"github.com/repro/repro/tasks"
)

// tasksCmd: list tasks, fetch a task bundle (API), or sync pinned task files (local).
func tasksCmd(ctx context.Context, args []string) error {
	const use = "usage: repro tasks list | repro tasks bundle ID [--hints 1,2] [-o FILE] | repro tasks sync [--from DIR] [--data-dir DIR] | " +
		"repro tasks calibrate ID --runs K [--seed N] [--data-dir DIR]"
	if len(args) == 0 {
		return usageError{use}
	}
	switch args[0] {
	case "list":
		a, err := newAPI()
		if err != nil {
			return err
		}
		resp, err := a.c.ListTasksWithResponse(ctx)
		if err != nil {
			return connErr(a, err)
		}
		if resp.JSON200 == nil {
			return apiError(resp.StatusCode(), resp.Body)
		}
		fmt.Printf("%-24s  %-10s  %-8s  %-42s  %s\n", "ID", "PROFILE", "TARGET", "ENVIRONMENT", "REFERENCE (start → target)")
		for _, t := range resp.JSON200.Items {
			ref := "calibrate on this profile"
			if t.TStartMs != nil && t.TTargetMs != nil {
				ref = fmt.Sprintf("%.0f ms → %.0f ms", *t.TStartMs, *t.TTargetMs)
			}
			fmt.Printf("%-24s  %-10s  %-8.4g  %-42s  %s\n", t.Id, t.Profile, t.TargetValLoss, t.Environment, ref)
		}
		return nil
	case "bundle":
		fs := flag.NewFlagSet("tasks bundle", flag.ContinueOnError)
		hints := fs.String("hints", "", "hint levels, e.g. 1,2 (1 pseudocode, 2 description, 3 mini-paper)")
		out := fs.String("o", "", "write the tar here (default: TASK.tar)")
		if len(args) < 2 {
			return usageError{use}
		}
		id := args[1]
		if err := parse(fs, args[2:]); err != nil {
			return err
		}
		a, err := newAPI()
		if err != nil {
			return err
		}
		params := &openapi.GetTaskBundleParams{}
		if *hints != "" {
			params.Hints = hints
		}
		resp, err := a.c.GetTaskBundle(ctx, id, params)
		if err != nil {
			return connErr(a, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			return apiError(resp.StatusCode, body)
		}
		path := *out
		if path == "" {
			path = id + ".tar"
		}
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			f.Close()
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", path)
		return f.Close()
	case "sync":
		fs := flag.NewFlagSet("tasks sync", flag.ContinueOnError)
		from := fs.String("from", "", "a local mirror directory (OWNER/NAME/COMMIT/PATH) instead of the files' public URLs")
		dataDir := fs.String("data-dir", defaultDataDir(), "repro's data directory (the task store is DATA/taskfiles)")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		cat, err := tasks.LoadCatalog()
		if err != nil {
			return err
		}
		var src tasks.Source = tasks.HTTPSource{}
		if *from != "" {
			src = tasks.MirrorSource{Dir: *from}
		}
		return tasks.Sync(ctx, cat, strings.TrimRight(*dataDir, "/")+"/taskfiles", src, os.Stderr)
	case "calibrate":
		return calibrateCmd(ctx, args[1:])
	}
	return usageError{use}
}

// dataCmd makes or verifies token shards.
func dataCmd(ctx context.Context, args []string) error {
	const use = "usage: repro data verify DIR | repro data synth DIR [--shards N] [--tokens N] [--seed N]"
	if len(args) < 2 {
		return usageError{use}
	}
	switch args[0] {
	case "verify":
		m, err := tasks.VerifyData(ctx, args[1])
		if err != nil {
			return err
		}
		if err := m.WriteSums(os.Stdout); err != nil {
			return err
		}
		// The manifest beside the shards, and the mark a worker looks for before it
		// mounts the folder into runs (DATA/datasets/NAME).
		sums, err := os.Create(filepath.Join(args[1], "SHA256SUMS"))
		if err != nil {
			return err
		}
		if err := m.WriteSums(sums); err != nil {
			sums.Close()
			return err
		}
		if err := sums.Close(); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(args[1], ".complete"), []byte(m.Digest()+"\n"), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "verified; manifest digest %s (SHA256SUMS and .complete written)\n", m.Digest())
		return nil
	case "synth":
		fs := flag.NewFlagSet("data synth", flag.ContinueOnError)
		shards := fs.Int("shards", 2, "train shards")
		tokens := fs.Int("tokens", 524288, "tokens per shard")
		seed := fs.Uint64("seed", 1, "seed")
		if err := parse(fs, args[2:]); err != nil {
			return err
		}
		m, err := tasks.Synth(ctx, args[1], *shards, *tokens, *seed)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "wrote %d shards to %s, manifest digest %s\n", *shards+1, args[1], m.Digest())
		return nil
	}
	return usageError{use}
}

// calibrateCmd measures a task's reference times on the hardware profile of the worker
// that runs it: K task runs of the start record's script and K of the target record's,
// interleaved A/B/A/B and submitted one at a time (a run's timing never shares the
// worker with another of these runs), then tasks.Calibrate writes them to
// DATA/refs/PROFILE.json, where the service and the worker read them.
func calibrateCmd(ctx context.Context, args []string) error {
	const use = "usage: repro tasks calibrate ID --runs K [--seed N] [--data-dir DIR]"
	fs := flag.NewFlagSet("tasks calibrate", flag.ContinueOnError)
	k := fs.Int("runs", 0, "runs of each script (at least 2): K of the start record's and K of the target record's, interleaved")
	seedFlag := fs.String("seed", "", "seed of the first run, run i gets seed+i-1 (default: the server chooses and records an independent seed for each run)")
	dataDir := fs.String("data-dir", defaultDataDir(), "repro's data directory: scripts come from its task store DATA/taskfiles, reference times go to DATA/refs")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, use)
		fs.PrintDefaults()
	}
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	}
	if fs.NArg() > 1 || (fs.NArg() == 1 && id != fs.Arg(0)) {
		return usageError{fmt.Sprintf("tasks calibrate: unexpected arguments %q; %s", fs.Args(), use)}
	}
	if id == "" {
		return usageError{use}
	}
	if *k < 2 {
		return usageError{fmt.Sprintf("tasks calibrate: --runs %d: at least 2 runs of each script are needed for a standard deviation; %s", *k, use)}
	}
	var seed *int64
	if *seedFlag != "" {
		v, err := strconv.ParseInt(*seedFlag, 10, 64)
		if err != nil || v < 0 {
			return usageError{fmt.Sprintf("--seed %q: not a non-negative integer", *seedFlag)}
		}
		seed = &v
	}
	cat, err := tasks.LoadCatalog()
	if err != nil {
		return err
	}
	task, err := cat.Task(id)
	if err != nil {
		return usageError{fmt.Sprintf("%v (see 'repro tasks list')", err)}
	}
	data := strings.TrimRight(*dataDir, "/")
	if data == "" {
		data = "/"
	}
	store := filepath.Join(data, "taskfiles")
	tmp, err := os.MkdirTemp("", "repro-calibrate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	type script struct {
		role   string // "start" or "target"
		record *tasks.Record
		path   string
	}
	scripts := []*script{{role: "start", record: task.Start()}, {role: "target", record: task.Target()}}
	for _, s := range scripts {
		b, err := taskFile(ctx, store, s.record.Script)
		if err != nil {
			return fmt.Errorf("calibrate %s: the %s script (record %d): %w", task.ID, s.role, s.record.Number, err)
		}
		s.path = filepath.Join(tmp, s.role, task.ScriptName)
		if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(s.path, b, 0o644); err != nil {
			return err
		}
	}
	a, err := newAPI()
	if err != nil {
		return err
	}
	total := 2 * *k
	fmt.Fprintf(os.Stderr, "calibrate %s: %d runs each of record %d (start, %s) and record %d (target, %s), interleaved, one at a time, through %s\n",
		task.ID, *k, task.StartRecord, task.Start().Script.SHA256[:12], task.TargetRecord, task.Target().Script.SHA256[:12], a.url)
	var startMs, targetMs []float64
	profile := ""
	for i := 0; i < total; i++ {
		s := scripts[i%2]
		// Calibration runs stay off the task's results and leaderboard.
		purpose := openapi.RunSpecPurposeCalibration
		spec := openapi.RunSpec{Task: &task.ID, Purpose: &purpose}
		if seed != nil {
			v := *seed + int64(i)
			spec.Seed = &v
		}
		run, err := a.create(ctx, spec, []upload{{name: task.ScriptName, path: s.path}})
		if err != nil {
			return fmt.Errorf("calibrate %s: run %d/%d (%s): %w", task.ID, i+1, total, s.role, err)
		}
		final, err := a.wait(ctx, run.Id)
		if err != nil {
			if ctx.Err() != nil {
				// Interrupted: do not leave the run occupying the worker.
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				if resp, cerr := a.c.CancelRunWithResponse(cctx, run.Id); cerr == nil && resp.StatusCode() == http.StatusAccepted {
					fmt.Fprintf(os.Stderr, "calibrate %s: run %s canceled\n", task.ID, run.Id)
				}
				cancel()
			}
			return fmt.Errorf("calibrate %s: run %d/%d (%s) %s: %w", task.ID, i+1, total, s.role, run.Id, err)
		}
		where := fmt.Sprintf("calibrate %s: run %d/%d (%s) %s", task.ID, i+1, total, s.role, final.Id)
		if final.State != openapi.RunStateSucceeded {
			return fmt.Errorf("%s %s: %s (see 'repro logs %s')%s", where, final.State, deref(final.Reason), final.Id, a.logTail(ctx, final.Id, 5))
		}
		if final.Score == nil || final.Score.Profile == "" {
			return fmt.Errorf("%s was not scored, so its hardware profile is unknown (does the worker have the task catalogue?)", where)
		}
		if profile == "" {
			profile = final.Score.Profile
		} else if final.Score.Profile != profile {
			return fmt.Errorf("%s was timed on hardware profile %q, earlier runs on %q: timings are never mixed across profiles "+
				"(calibrate against a service whose workers share one profile)", where, final.Score.Profile, profile)
		}
		m := metricsFromAPI(final.Metrics)
		ms, err := tasks.CalibrationTimes(task, []tasks.Metrics{m})
		if err != nil {
			return fmt.Errorf("%s: %s", where, calibReason(task, m, err))
		}
		if s.role == "start" {
			startMs = append(startMs, ms[0])
		} else {
			targetMs = append(targetMs, ms[0])
		}
		detail := fmt.Sprintf("val_loss %.4f", *m.FinalValLoss)
		if m.Steps != nil {
			detail += fmt.Sprintf(" at step %d", *m.Steps)
		}
		if final.StartedAt != nil && final.FinishedAt != nil {
			detail += fmt.Sprintf(", wall %.1f s", final.FinishedAt.Sub(*final.StartedAt).Seconds())
		}
		if final.Spec.Seed != nil {
			detail += fmt.Sprintf(", seed %d", *final.Spec.Seed)
		}
		fmt.Fprintf(os.Stderr, "calibrate %s: run %d/%d (%s) %.2f s  (%s, profile %s, run %s)\n",
			task.ID, i+1, total, s.role, ms[0]/1000, detail, profile, final.Id)
	}
	refsDir := filepath.Join(data, "refs")
	ref, err := tasks.Calibrate(refsDir, profile, task, startMs, targetMs)
	if err != nil {
		return err
	}
	gap := ref.StartMs - ref.TargetMs
	fmt.Printf("task %s calibrated on hardware profile %s: %d runs of each script, written to %s\n", task.ID, profile, *k, tasks.RefsPath(refsDir, profile))
	fmt.Printf("  start  (record %d): mean %.0f ms, std %.0f ms (%.1f%%), runs %s\n", task.StartRecord, ref.StartMs, ref.StartStdMs, 100*ref.StartStdMs/ref.StartMs, msList(startMs))
	fmt.Printf("  target (record %d): mean %.0f ms, std %.0f ms (%.1f%%), runs %s\n", task.TargetRecord, ref.TargetMs, ref.TargetStdMs, 100*ref.TargetStdMs/ref.TargetMs, msList(targetMs))
	fmt.Printf("  gap %.0f ms; noise floor %.4f (the larger std / gap): FSR differences below it are noise\n", gap, ref.NoiseFloor)
	if profile != task.Profile {
		fmt.Printf("  note: task %s is defined for profile %s; these reference times score runs on %s only\n", task.ID, task.Profile, profile)
	} else {
		// The service must read the same data directory, or it will not score with them.
		resp, err := a.c.GetTaskWithResponse(ctx, task.ID)
		if err == nil && resp.JSON200 != nil && (resp.JSON200.TStartMs == nil || *resp.JSON200.TStartMs != ref.StartMs) {
			fmt.Fprintf(os.Stderr, "warning: the service at %s does not report these reference times for %s; does it use --data-dir %s?\n", a.url, task.ID, data)
		}
	}
	return nil
}

// taskFile returns the content of a pinned task file from the task store (see
// 'repro tasks sync'), or, for a file built into the binary that the store lacks,
// from the binary; either way checked against its pinned sha256 and size.
func taskFile(ctx context.Context, store string, f tasks.File) ([]byte, error) {
	b, err := os.ReadFile(tasks.StorePath(store, f.SHA256))
	if errors.Is(err, iofs.ErrNotExist) && f.Repo == tasks.BuiltinRepo {
		// Sync serves built-in files from the binary; a one-file catalogue into a
		// scratch store leaves the real store untouched.
		scratch, terr := os.MkdirTemp("", "repro-taskfile-")
		if terr != nil {
			return nil, terr
		}
		defer os.RemoveAll(scratch)
		one := &tasks.Catalog{Records: []tasks.Record{{Script: f}}}
		if serr := tasks.Sync(ctx, one, scratch, nil, nil); serr != nil {
			return nil, serr
		}
		b, err = os.ReadFile(tasks.StorePath(scratch, f.SHA256))
	}
	if errors.Is(err, iofs.ErrNotExist) {
		return nil, fmt.Errorf("%s (sha256 %s) is not in the task store %s: run 'repro tasks sync --data-dir %s' first",
			f, f.SHA256, store, filepath.Dir(store))
	}
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != f.SHA256 || int64(len(b)) != f.Bytes {
		return nil, fmt.Errorf("%s in the task store %s has sha256 %s and %d bytes, its pin %s and %d bytes: run 'repro tasks sync' again",
			f, store, got, len(b), f.SHA256, f.Bytes)
	}
	return b, nil
}

// logTail returns the last n lines of a run's output, indented on lines of their
// own, or "" when there is none to be had.
func (a *api) logTail(ctx context.Context, id uuid.UUID, n int) string {
	resp, err := a.c.GetRunLog(ctx, id, nil)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 || lines[0] == "" && len(lines) == 1 {
		return ""
	}
	return "; its output ended with:\n    " + strings.Join(lines, "\n    ")
}

// metricsFromAPI turns a run's metrics as the API reports them into tasks.Metrics.
func metricsFromAPI(m *openapi.Metrics) tasks.Metrics {
	if m == nil {
		return tasks.Metrics{Source: tasks.SourceNone}
	}
	out := tasks.Metrics{
		FinalValLoss: m.FinalValLoss, FinalTrainLoss: m.FinalTrainLoss, TrainTimeMs: m.TrainTimeMs,
		Steps: m.Steps, TotalSteps: m.TotalSteps,
	}
	if m.Source != nil {
		out.Source = string(*m.Source)
	}
	return out
}

// calibReason is why a calibration run is refused: the run's own words where the
// tasks package's error wraps them.
func calibReason(task *tasks.Task, m tasks.Metrics, err error) string {
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, " is not valid: "); ok {
		msg = "not valid on task " + task.ID + ": " + after
	}
	if m.FinalValLoss != nil && m.Steps != nil {
		msg += fmt.Sprintf(" (last val loss %.4f at step %d)", *m.FinalValLoss, *m.Steps)
	}
	return msg
}

// msList formats train times in ms.
func msList(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
