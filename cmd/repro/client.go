package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/repro/repro/openapi"
)

// api is the CLI's view of the server: the generated client plus the server URL and token.
type api struct {
	url, token string
	http       *http.Client
	c          *openapi.ClientWithResponses
}

func newAPI() (*api, error) {
	base := strings.TrimRight(os.Getenv("REPRO_URL"), "/")
	if base == "" {
		base = "http://127.0.0.1:8080"
	}
	a := &api{url: base, token: os.Getenv("REPRO_TOKEN"), http: &http.Client{}}
	c, err := openapi.NewClientWithResponses(base, openapi.WithHTTPClient(a.http), openapi.WithRequestEditorFn(a.auth))
	if err != nil {
		return nil, usageError{fmt.Sprintf("REPRO_URL %q: %v", base, err)}
	}
	a.c = c
	return a, nil
}

func (a *api) auth(_ context.Context, req *http.Request) error {
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	return nil
}

// apiError turns a non-success answer into one readable line from its problem+json body.
func apiError(status int, body []byte) error {
	var p openapi.Problem
	if json.Unmarshal(body, &p) == nil && p.Title != "" {
		msg := fmt.Sprintf("%d %s", p.Status, p.Title)
		switch {
		case p.Field != nil && p.Reason != nil:
			msg += ": " + *p.Field + ": " + *p.Reason
		case p.Detail != nil:
			msg += ": " + *p.Detail
		}
		if p.Errors != nil && len(*p.Errors) > 1 {
			msg += fmt.Sprintf(" (+%d more)", len(*p.Errors)-1)
		}
		return errors.New(msg)
	}
	return fmt.Errorf("%d %s: %s", status, http.StatusText(status), strings.TrimSpace(string(body)))
}

func connErr(a *api, err error) error {
	return fmt.Errorf("cannot reach repro at %s (REPRO_URL): %w", a.url, err)
}

func parseID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return id, usageError{fmt.Sprintf("%q is not a run ID", s)}
	}
	return id, nil
}

// submit sends files and a command, then (unless --detach) follows the run to its end.
func submit(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	env := fs.String("env", "", "environment name (required)")
	follow := fs.Bool("follow", false, "print the run's output live")
	detach := fs.Bool("detach", false, "print the run ID and return at once")
	timeout := fs.Int("timeout", 0, "wall-time limit in seconds (server default: 3600)")
	seed := fs.String("seed", "", "seed passed as REPRO_SEED (default: chosen and recorded by the server)")
	task := fs.String("task", "", "task ID the run is scored against")
	var envs listFlag
	fs.Var(&envs, "e", "KEY=VALUE environment variable for the script (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: repro submit --env NAME [--follow] [--timeout S] [-e K=V] FILE... -- CMD...")
		fmt.Fprintln(os.Stderr, "       repro submit --task ID [--follow] FILE...   (the task names environment, command and limits)")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	files, command := splitCommand(fs.Args())
	if *env == "" && *task == "" {
		return usageError{"submit: --env NAME is required (or --task ID, which names it)"}
	}
	if len(files) == 0 {
		return usageError{"submit: give at least one FILE"}
	}
	if len(command) == 0 && *task == "" {
		return usageError{"submit: give the command after --, e.g. -- python3 train.py"}
	}
	var spec openapi.RunSpec
	if *env != "" {
		spec.Environment = env
	}
	if len(command) > 0 {
		spec.Command = &command
	}
	if *timeout > 0 {
		spec.TimeoutSeconds = timeout
	}
	if *seed != "" {
		v, err := strconv.ParseInt(*seed, 10, 64)
		if err != nil {
			return usageError{fmt.Sprintf("--seed %q: not an integer", *seed)}
		}
		spec.Seed = &v
	}
	if *task != "" {
		spec.Task = task
	}
	vars, err := envFlags("submit", envs)
	if err != nil {
		return err
	}
	spec.Env = vars
	uploads, err := collectFiles(files)
	if err != nil {
		return err
	}
	a, err := newAPI()
	if err != nil {
		return err
	}
	run, err := a.create(ctx, spec, uploads)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "run %s queued\n", run.Id)
	if *detach {
		fmt.Println(run.Id)
		return nil
	}
	if *follow {
		if err := a.follow(ctx, run.Id, os.Stdout); err != nil {
			return err
		}
	}
	final, err := a.wait(ctx, run.Id)
	if err != nil {
		return err
	}
	printSummary(os.Stderr, final)
	if final.State != openapi.RunStateSucceeded {
		return exitCode(1)
	}
	return nil
}

// splitCommand splits "FILE... -- CMD..." (the flag package drops the first "--").
// envFlags turns repeated -e KEY=VALUE flags into a spec's env (nil for none).
func envFlags(cmd string, envs listFlag) (*map[string]string, error) {
	if len(envs) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range envs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Sprintf("%s: -e %q: want KEY=VALUE", cmd, kv)}
		}
		m[k] = v
	}
	return &m, nil
}

func splitCommand(args []string) ([]string, []string) {
	for i, a := range args {
		if a == "--" {
			return args[:i], args[i+1:]
		}
	}
	// flag.Parse consumed "--": everything after the files is the command only if the
	// caller used it; without "--" there is no command.
	return args, nil
}

type upload struct{ name, path string }

// collectFiles names each file by its path as given (relative, cleaned) or its base
// name; a folder contributes every regular file beneath it.
func collectFiles(args []string) ([]upload, error) {
	var out []upload
	for _, arg := range args {
		info, err := os.Stat(arg)
		if err != nil {
			return nil, usageError{fmt.Sprintf("%s: %v", arg, err)}
		}
		if !info.IsDir() {
			out = append(out, upload{name: uploadName(arg), path: arg})
			continue
		}
		err = filepath.WalkDir(arg, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			out = append(out, upload{name: uploadName(p), path: p})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func uploadName(p string) string {
	clean := filepath.ToSlash(filepath.Clean(p))
	if filepath.IsAbs(p) || clean == ".." || strings.HasPrefix(clean, "../") {
		return filepath.Base(p)
	}
	return clean
}

// create streams the multipart submission.
func (a *api) create(ctx context.Context, spec openapi.RunSpec, files []upload) (*openapi.Run, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		pw.CloseWithError(writeSubmission(mw, spec, files))
	}()
	resp, err := a.c.CreateRunWithBodyWithResponse(ctx, mw.FormDataContentType(), pr)
	if err != nil {
		return nil, connErr(a, err)
	}
	if resp.JSON201 == nil {
		return nil, apiError(resp.StatusCode(), resp.Body)
	}
	return resp.JSON201, nil
}

// writeSubmission writes the multipart body of a submission: the JSON spec part
// (a RunSpec or a VerificationRequest), then the files.
func writeSubmission(mw *multipart.Writer, spec any, files []upload) error {
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="spec"`)
	h.Set("Content-Type", "application/json")
	pw, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if err := json.NewEncoder(pw).Encode(spec); err != nil {
		return err
	}
	for _, f := range files {
		w, err := mw.CreateFormFile("files", f.name)
		if err != nil {
			return err
		}
		in, err := os.Open(f.path)
		if err != nil {
			return err
		}
		_, err = io.Copy(w, in)
		in.Close()
		if err != nil {
			return err
		}
	}
	return mw.Close()
}

// follow prints the run's output as it comes (SSE), resuming after a dropped connection.
func (a *api) follow(ctx context.Context, id uuid.UUID, out io.Writer) error {
	var last string
	for attempt := 0; ; attempt++ {
		done, err := a.followOnce(ctx, id, out, &last)
		if done || ctx.Err() != nil {
			return err
		}
		if attempt >= 30 {
			return fmt.Errorf("log stream: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (a *api) followOnce(ctx context.Context, id uuid.UUID, out io.Writer, last *string) (bool, error) {
	t := true
	params := &openapi.GetRunLogParams{Follow: &t}
	if *last != "" {
		params.LastEventID = last
	}
	resp, err := a.c.GetRunLog(ctx, id, params)
	if err != nil {
		return false, connErr(a, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return true, apiError(resp.StatusCode, body)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var event string
	var data [][]byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if event == "log" {
				if _, err := out.Write(bytes.Join(data, []byte("\n"))); err != nil {
					return true, err
				}
			}
			if event == "end" {
				return true, nil
			}
			event, data = "", nil
		case bytes.HasPrefix(line, []byte("event: ")):
			event = string(line[len("event: "):])
		case bytes.HasPrefix(line, []byte("id: ")):
			*last = string(line[len("id: "):])
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append(data, append([]byte(nil), line[len("data: "):]...))
		case bytes.Equal(line, []byte("data:")):
			data = append(data, nil)
		}
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	return false, io.ErrUnexpectedEOF
}

// wait polls the run until it has ended, often at first (short runs end fast), then
// backing off to once a second.
func (a *api) wait(ctx context.Context, id uuid.UUID) (*openapi.Run, error) {
	pause := 25 * time.Millisecond
	for {
		r, err := a.get(ctx, id)
		if err != nil {
			return nil, err
		}
		switch r.State {
		case openapi.RunStateSucceeded, openapi.RunStateFailed, openapi.RunStateError, openapi.RunStateCanceled:
			return r, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(pause*3/2, time.Second)
	}
}

func (a *api) get(ctx context.Context, id uuid.UUID) (*openapi.Run, error) {
	resp, err := a.c.GetRunWithResponse(ctx, id)
	if err != nil {
		return nil, connErr(a, err)
	}
	if resp.JSON200 == nil {
		return nil, apiError(resp.StatusCode(), resp.Body)
	}
	return resp.JSON200, nil
}

func printSummary(w io.Writer, r *openapi.Run) {
	took := ""
	if r.StartedAt != nil && r.FinishedAt != nil {
		took = " in " + r.FinishedAt.Sub(*r.StartedAt).Round(100*time.Millisecond).String()
	}
	fmt.Fprintf(w, "run %s %s%s\n", r.Id, r.State, took)
	if r.Reason != nil {
		fmt.Fprintf(w, "  reason: %s\n", *r.Reason)
	}
	if r.ExitCode != nil {
		fmt.Fprintf(w, "  exit code: %d\n", *r.ExitCode)
	}
	if m := r.Metrics; m != nil {
		if m.FinalValLoss != nil {
			line := fmt.Sprintf("  val_loss: %.4f", *m.FinalValLoss)
			if m.Steps != nil {
				line += fmt.Sprintf(" at step %d", *m.Steps)
			}
			if m.TrainTimeMs != nil {
				line += fmt.Sprintf(", train_time %.0f ms", *m.TrainTimeMs)
			}
			fmt.Fprintln(w, line)
		} else if m.Source != nil && *m.Source == "none" {
			fmt.Fprintln(w, "  metrics: none reported")
		}
	}
	if sc := r.Score; sc != nil {
		line := fmt.Sprintf("  score (%s on %s): ", sc.Task, sc.Profile)
		if sc.Valid {
			line += fmt.Sprintf("valid, FSR %.3f", sc.Fsr)
			if sc.NoiseFloor != nil && *sc.NoiseFloor > 0 {
				line += fmt.Sprintf(" (noise floor ±%.3f)", *sc.NoiseFloor)
			}
		} else {
			line += "invalid, FSR 0"
		}
		if sc.Reason != nil {
			line += "; " + *sc.Reason
		}
		fmt.Fprintln(w, line)
	}
	if r.Bundle != nil {
		fmt.Fprintf(w, "  bundle: %s (manifest sha256 %s)\n", r.Bundle.Location, r.Bundle.ManifestSha256)
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// logs prints a run's output, or follows it.
func logs(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("logs", flag.ContinueOnError)
	follow := fs.Bool("follow", false, "keep printing until the run ends")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"usage: repro logs ID [--follow]"}
	}
	id, err := parseID(fs.Arg(0))
	if err != nil {
		return err
	}
	a, err := newAPI()
	if err != nil {
		return err
	}
	if *follow {
		return a.follow(ctx, id, os.Stdout)
	}
	resp, err := a.c.GetRunLog(ctx, id, nil)
	if err != nil {
		return connErr(a, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return apiError(resp.StatusCode, body)
	}
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}

// runs lists the team's runs.
func runs(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("runs", flag.ContinueOnError)
	state := fs.String("state", "", "only runs in this state")
	limit := fs.Int("limit", 20, "how many")
	if err := parse(fs, args); err != nil {
		return err
	}
	a, err := newAPI()
	if err != nil {
		return err
	}
	params := &openapi.ListRunsParams{Limit: limit}
	if *state != "" {
		st := openapi.RunState(*state)
		params.State = &st
	}
	resp, err := a.c.ListRunsWithResponse(ctx, params)
	if err != nil {
		return connErr(a, err)
	}
	if resp.JSON200 == nil {
		return apiError(resp.StatusCode(), resp.Body)
	}
	fmt.Printf("%-36s  %-10s  %-20s  %-10s  %s\n", "ID", "STATE", "CREATED", "VAL_LOSS", "COMMAND")
	for _, r := range resp.JSON200.Items {
		loss := "-"
		if r.Metrics != nil && r.Metrics.FinalValLoss != nil {
			loss = fmt.Sprintf("%.4f", *r.Metrics.FinalValLoss)
		}
		fmt.Printf("%-36s  %-10s  %-20s  %-10s  %s\n", r.Id, r.State, r.CreatedAt.Local().Format("2006-01-02 15:04:05"), loss, strings.Join(deref(r.Spec.Command), " "))
	}
	return nil
}

// cancel asks the server to stop a run.
func cancel(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usageError{"usage: repro cancel ID"}
	}
	id, err := parseID(args[0])
	if err != nil {
		return err
	}
	a, err := newAPI()
	if err != nil {
		return err
	}
	resp, err := a.c.CancelRunWithResponse(ctx, id)
	if err != nil {
		return connErr(a, err)
	}
	if resp.StatusCode() != http.StatusAccepted {
		return apiError(resp.StatusCode(), resp.Body)
	}
	fmt.Fprintf(os.Stderr, "run %s: cancel requested\n", id)
	return nil
}

// admin manages teams and tokens (needs the admin token in REPRO_TOKEN).
func admin(ctx context.Context, args []string) error {
	const use = "usage: repro admin team create NAME | repro admin token create --team NAME"
	if len(args) < 2 || args[1] != "create" {
		return usageError{use}
	}
	a, err := newAPI()
	if err != nil {
		return err
	}
	switch args[0] {
	case "team":
		if len(args) != 3 {
			return usageError{use}
		}
		resp, err := a.c.CreateTeamWithResponse(ctx, openapi.TeamCreate{Name: args[2]})
		if err != nil {
			return connErr(a, err)
		}
		if resp.JSON201 == nil {
			return apiError(resp.StatusCode(), resp.Body)
		}
		fmt.Printf("team %s created\n", resp.JSON201.Name)
		return nil
	case "token":
		fs := flag.NewFlagSet("admin token create", flag.ContinueOnError)
		team := fs.String("team", "", "the team the token belongs to")
		if err := parse(fs, args[2:]); err != nil {
			return err
		}
		if *team == "" {
			return usageError{use}
		}
		resp, err := a.c.CreateTokenWithResponse(ctx, *team)
		if err != nil {
			return connErr(a, err)
		}
		if resp.JSON201 == nil {
			return apiError(resp.StatusCode(), resp.Body)
		}
		fmt.Fprintf(os.Stderr, "token for team %s (shown once; keep it secret):\n", *team)
		fmt.Println(resp.JSON201.Token)
		return nil
	}
	return usageError{use}
}
