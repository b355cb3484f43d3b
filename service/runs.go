package service

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v5"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/openapi"
	"github.com/repro/repro/sandbox/gpu"
	"github.com/repro/repro/store"
)

const (
	maxSpecBytes  = 1 << 20
	maxFiles      = 1000
	maxPathLength = 512
	// DefaultTimeoutSeconds applies when a spec names none.
	DefaultTimeoutSeconds = 3600
)

// CreateRun accepts a submission: the spec part and the files, streamed to a staging
// folder that becomes the run's submission only once everything checked out.
func (s *Server) CreateRun(c *echo.Context) error {
	p := who(c)
	if p.admin {
		return problem(http.StatusForbidden, "the admin token belongs to no team: submit runs with a team token")
	}
	req := c.Request()
	staging, specRaw, files, err := s.receiveMultipart(c, "submission-", "a 'spec' part and 'files' parts", true, true)
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging) // renamed away on success
	spec, purpose, err := s.checkSpec(specRaw)
	if err != nil {
		return err
	}
	id := uuid.NewString()
	paths := store.RunPaths(s.cfg.DataDir, id)
	if err := os.MkdirAll(paths.Root, 0o755); err != nil {
		return fmt.Errorf("run dir: %w", err)
	}
	if err := os.Rename(staging, paths.Submission); err != nil {
		os.RemoveAll(paths.Root)
		return fmt.Errorf("run dir: %w", err)
	}
	run, err := s.store.CreateRun(req.Context(), store.Run{ID: id, TeamID: p.team.ID, Spec: spec, Purpose: purpose})
	if err != nil {
		os.RemoveAll(paths.Root)
		return err
	}
	run.TeamName = p.team.Name
	s.log.Info("run submitted", "run", id, "team", p.team.Name, "environment", spec.Environment, "files", len(files))
	c.Response().Header().Set("Location", "/v1/runs/"+id)
	return c.JSON(http.StatusCreated, toAPI(run))
}

// receiveMultipart checks that the body is multipart/form-data (holding what
// contentHint says), bounds it by MaxUploadBytes, and streams it into a fresh
// staging folder under the data dir: the spec part into memory, each file to its
// path there (see readSubmission). The caller removes the folder, or moves it
// away on success; on an error nothing is left.
func (s *Server) receiveMultipart(c *echo.Context, prefix, contentHint string, specRequired, filesRequired bool) (staging string, spec []byte, files []string, err error) {
	req := c.Request()
	mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return "", nil, nil, fieldProblem(http.StatusUnsupportedMediaType, "Content-Type", "must be multipart/form-data with "+contentHint)
	}
	req.Body = http.MaxBytesReader(c.Response(), req.Body, s.cfg.MaxUploadBytes)
	staging, err = os.MkdirTemp(s.tmpDir(), prefix)
	if err != nil {
		return "", nil, nil, fmt.Errorf("staging: %w", err)
	}
	spec, files, err = s.readSubmission(req, staging, specRequired, filesRequired)
	if err != nil {
		os.RemoveAll(staging)
		return "", nil, nil, err
	}
	return staging, spec, files, nil
}

func (s *Server) tmpDir() string {
	d := filepath.Join(s.cfg.DataDir, "tmp")
	_ = os.MkdirAll(d, 0o755)
	return d
}

// readSubmission streams the multipart body: the spec part into memory (bounded),
// each file part to its path under dir.
func (s *Server) readSubmission(req *http.Request, dir string, specRequired, filesRequired bool) ([]byte, []string, error) {
	mr, err := req.MultipartReader()
	if err != nil {
		return nil, nil, fieldProblem(http.StatusBadRequest, "body", "not a multipart body: "+err.Error())
	}
	var spec []byte
	var files []string
	seen := map[string]bool{}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, multipartErr(err)
		}
		switch part.FormName() {
		case "spec":
			if spec != nil {
				return nil, nil, fieldProblem(http.StatusBadRequest, "spec", "given more than once")
			}
			spec, err = io.ReadAll(io.LimitReader(part, maxSpecBytes+1))
			if err != nil {
				return nil, nil, multipartErr(err)
			}
			if len(spec) > maxSpecBytes {
				return nil, nil, fieldProblem(http.StatusBadRequest, "spec", fmt.Sprintf("larger than %d bytes", maxSpecBytes))
			}
		case "files":
			// part.FileName() keeps only the base name; sub-folders are part of the name here.
			_, params, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
			name, err := cleanFilePath(params["filename"])
			if err != nil {
				return nil, nil, fieldProblem(http.StatusBadRequest, "files", err.Error())
			}
			if seen[name] {
				return nil, nil, fieldProblem(http.StatusBadRequest, "files", fmt.Sprintf("%q given twice", name))
			}
			if len(files) >= maxFiles {
				return nil, nil, fieldProblem(http.StatusBadRequest, "files", fmt.Sprintf("more than %d files", maxFiles))
			}
			seen[name] = true
			files = append(files, name)
			if err := writePart(filepath.Join(dir, filepath.FromSlash(name)), part); err != nil {
				return nil, nil, err
			}
		default:
			return nil, nil, fieldProblem(http.StatusBadRequest, part.FormName(), "unknown part: the body has one 'spec' part and 'files' parts")
		}
	}
	if spec == nil && specRequired {
		return nil, nil, fieldProblem(http.StatusBadRequest, "spec", "missing: a JSON run spec part named 'spec' is required")
	}
	if len(files) == 0 && filesRequired {
		return nil, nil, fieldProblem(http.StatusBadRequest, "files", "missing: at least one file part named 'files' is required")
	}
	return spec, files, nil
}

func multipartErr(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return fieldProblem(http.StatusBadRequest, "body", "malformed multipart body: "+err.Error())
}

func writePart(dst string, r io.Reader) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("staging: %w", err)
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fieldProblem(http.StatusBadRequest, "files", fmt.Sprintf("%s: clashes with another file or folder", filepath.Base(dst)))
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return multipartErr(err)
	}
	return f.Close()
}

// cleanFilePath checks a submitted file name: relative, inside /workspace, no tricks.
func cleanFilePath(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("a file part has no filename")
	case len(name) > maxPathLength:
		return "", fmt.Errorf("file name longer than %d bytes", maxPathLength)
	case strings.ContainsAny(name, "\\\x00"):
		return "", fmt.Errorf("%q: backslashes and NUL are not allowed in file names", name)
	case strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("%q: must be a relative path", name)
	}
	clean := path.Clean(name)
	if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%q: must stay inside the working directory", name)
	}
	if clean == "out" || strings.HasPrefix(clean, "out/") {
		return "", fmt.Errorf("%q: out/ is the run's output folder and must not be submitted", name)
	}
	return clean, nil
}

// decodePart validates a JSON part against the contract's schema, then decodes it
// strictly into dst.
func (s *Server) decodePart(raw []byte, schema string, dst any) error {
	var generic any
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&generic); err != nil {
		return fieldProblem(http.StatusBadRequest, "spec", "not valid JSON: "+err.Error())
	}
	if dec.More() {
		return fieldProblem(http.StatusBadRequest, "spec", "trailing data after the JSON object")
	}
	if err := s.valid.schema(schema, "spec", generic); err != nil {
		return err
	}
	strict := json.NewDecoder(bytes.NewReader(raw))
	strict.DisallowUnknownFields()
	if err := strict.Decode(dst); err != nil {
		return fieldProblem(http.StatusBadRequest, "spec", err.Error())
	}
	return nil
}

// checkSpec validates the spec against the contract, then what the contract cannot
// say; it returns the run's spec and its purpose.
func (s *Server) checkSpec(raw []byte) (store.RunSpec, string, error) {
	var in openapi.RunSpec
	if err := s.decodePart(raw, "RunSpec", &in); err != nil {
		return store.RunSpec{}, "", err
	}
	purpose := store.PurposeSubmission
	if in.Purpose != nil {
		purpose = string(*in.Purpose)
	}
	out := store.RunSpec{TimeoutSeconds: DefaultTimeoutSeconds, Seed: in.Seed}
	if in.Environment != nil {
		out.Environment = *in.Environment
	}
	if in.Command != nil {
		out.Command = *in.Command
	}
	if in.TimeoutSeconds != nil {
		out.TimeoutSeconds = *in.TimeoutSeconds
	}
	gpus, err := gpuCount(in.Gpus)
	if err != nil {
		return store.RunSpec{}, "", err
	}
	out.GPUs = gpus
	if in.GpuModel != nil {
		out.GPUModel = *in.GpuModel
	}
	if in.ExclusiveNode != nil {
		out.ExclusiveNode = *in.ExclusiveNode
	}
	if in.Task != nil {
		if err := s.applyTask(&out, in); err != nil {
			return store.RunSpec{}, "", err
		}
	}
	if out.Environment == "" {
		return store.RunSpec{}, "", fieldProblem(http.StatusBadRequest, "spec.environment", "required (unless the run names a task)")
	}
	if len(out.Command) == 0 {
		return store.RunSpec{}, "", fieldProblem(http.StatusBadRequest, "spec.command", "required (unless the run names a task)")
	}
	if _, ok := s.cfg.Environments[out.Environment]; !ok {
		return store.RunSpec{}, "", fieldProblem(http.StatusUnprocessableEntity, "spec.environment",
			fmt.Sprintf("%q is not a registered environment (registered: %s)", out.Environment, strings.Join(s.environmentNames(), ", ")))
	}
	if s.cfg.GPUCheck != nil {
		req := gpu.Request{Count: out.GPUs, GPUModel: out.GPUModel, ExclusiveNode: out.ExclusiveNode}
		if err := s.cfg.GPUCheck(req); err != nil {
			field := "spec.gpus"
			if out.GPUModel != "" {
				field = "spec.gpu_model"
			}
			return store.RunSpec{}, "", fieldProblem(http.StatusUnprocessableEntity, field, err.Error())
		}
	}
	if in.Env != nil {
		for k := range *in.Env {
			if strings.HasPrefix(k, "REPRO_") {
				return store.RunSpec{}, "", fieldProblem(http.StatusUnprocessableEntity, "spec.env."+k, "REPRO_* variables are set by repro itself")
			}
			if k == "" || strings.ContainsAny(k, "=\x00") {
				return store.RunSpec{}, "", fieldProblem(http.StatusUnprocessableEntity, "spec.env", fmt.Sprintf("%q is not a valid variable name", k))
			}
		}
		if out.Env == nil {
			out.Env = map[string]string{}
		}
		for k, v := range *in.Env {
			out.Env[k] = v
		}
	}
	if out.Seed == nil {
		// Every run has a known seed, so it can be re-run exactly.
		var b [8]byte
		_, _ = rand.Read(b[:])
		seed := int64(binary.LittleEndian.Uint64(b[:]) >> 33)
		out.Seed = &seed
	}
	return out, purpose, nil
}

// applyTask gives a task run the task's environment, command, time limit and GPUs.
// A spec that names other values is refused unless the service allows overrides:
// a score is only comparable when the run was the task's run.
func (s *Server) applyTask(out *store.RunSpec, in openapi.RunSpec) error {
	if s.cfg.Tasks == nil {
		return fieldProblem(http.StatusUnprocessableEntity, "spec.task", "this service has no task catalogue")
	}
	t, err := s.cfg.Tasks.Task(*in.Task)
	if err != nil {
		return fieldProblem(http.StatusUnprocessableEntity, "spec.task", fmt.Sprintf("%q is not a task (see GET /v1/tasks)", *in.Task))
	}
	limit := int(t.TimeLimit().Seconds())
	gpus := t.HardwareProfile().GPUs
	checks := []struct {
		field       string
		given, same bool
		task        string
	}{
		{"environment", in.Environment != nil, in.Environment != nil && *in.Environment == t.Environment, t.Environment},
		{"command", in.Command != nil, in.Command != nil && slices.Equal(*in.Command, t.Command), t.CommandLine()},
		{"timeout_seconds", in.TimeoutSeconds != nil, in.TimeoutSeconds != nil && *in.TimeoutSeconds == limit, strconv.Itoa(limit)},
		{"gpus", in.Gpus != nil, out.GPUs == gpus, strconv.Itoa(gpus)},
	}
	for _, c := range checks {
		if c.given && !c.same && !s.cfg.TaskOverrides {
			return fieldProblem(http.StatusUnprocessableEntity, "spec."+c.field,
				fmt.Sprintf("task %s sets it (%s); this service does not allow overrides: leave it out", t.ID, c.task))
		}
	}
	if in.Env != nil && !s.cfg.TaskOverrides {
		for k := range *in.Env {
			if _, ok := t.Env[k]; ok {
				return fieldProblem(http.StatusUnprocessableEntity, "spec.env."+k, fmt.Sprintf("task %s sets it; this service does not allow overrides", t.ID))
			}
		}
	}
	out.Task = t.ID
	if in.Environment == nil || !s.cfg.TaskOverrides {
		out.Environment = t.Environment
	}
	if in.Command == nil || !s.cfg.TaskOverrides {
		out.Command = t.Command
	}
	if in.TimeoutSeconds == nil || !s.cfg.TaskOverrides {
		out.TimeoutSeconds = limit
	}
	if in.Gpus == nil || !s.cfg.TaskOverrides {
		out.GPUs = gpus
	}
	if p := t.HardwareProfile(); p.GPUModel != "" && (in.GpuModel == nil || !s.cfg.TaskOverrides) {
		out.GPUModel = p.GPUModel
	}
	if in.ExclusiveNode == nil {
		out.ExclusiveNode = true // task runs are timed: a whole node each
	}
	return nil
}

func (s *Server) environmentNames() []string {
	names := make([]string, 0, len(s.cfg.Environments))
	for n := range s.cfg.Environments {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// visibleRun loads a run the caller may see (the admin sees all).
func (s *Server) visibleRun(c *echo.Context, id uuid.UUID) (store.Run, error) {
	p := who(c)
	teamID := p.team.ID
	if p.admin {
		teamID = ""
	}
	r, err := s.store.GetRun(c.Request().Context(), teamID, id.String())
	if errors.Is(err, store.ErrNotFound) {
		return r, problem(http.StatusNotFound, "no run "+id.String())
	}
	return r, err
}

func parseRunID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return id, fieldProblem(http.StatusBadRequest, "id", fmt.Sprintf("%q is not a UUID", s))
	}
	return id, nil
}

// GetRun returns one run.
func (s *Server) GetRun(c *echo.Context, id openapi.RunID) error {
	r, err := s.visibleRun(c, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, toAPI(r))
}

// ListRuns pages through the caller's runs, newest first.
func (s *Server) ListRuns(c *echo.Context, params openapi.ListRunsParams) error {
	p := who(c)
	f := store.ListFilter{TeamID: p.team.ID}
	if p.admin {
		f.TeamID = ""
	}
	if params.State != nil {
		f.State = store.State(*params.State)
	}
	if params.Limit != nil {
		f.Limit = *params.Limit
	}
	if params.Cursor != nil {
		f.Cursor = *params.Cursor
	}
	return s.listRuns(c, f)
}

func (s *Server) listRuns(c *echo.Context, f store.ListFilter) error {
	runs, next, err := s.store.ListRuns(c.Request().Context(), f)
	if err != nil {
		return err
	}
	out := openapi.RunList{Items: make([]openapi.Run, 0, len(runs))}
	for _, r := range runs {
		out.Items = append(out.Items, toAPI(r))
	}
	if next != "" {
		out.NextCursor = &next
	}
	return c.JSON(http.StatusOK, out)
}

// CancelRun asks for a run to stop.
func (s *Server) CancelRun(c *echo.Context, id openapi.RunID) error {
	if _, err := s.visibleRun(c, id); err != nil {
		return err
	}
	r, err := s.store.RequestCancel(c.Request().Context(), "", id.String())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, toAPI(r))
}

// GetRunFile streams one file of the archived bundle.
func (s *Server) GetRunFile(c *echo.Context, id openapi.RunID, name string) error {
	r, err := s.visibleRun(c, id)
	if err != nil {
		return err
	}
	clean := path.Clean(name)
	if name == "" || strings.HasPrefix(clean, "../") || clean == ".." || strings.HasPrefix(name, "/") {
		return fieldProblem(http.StatusBadRequest, "path", fmt.Sprintf("%q is not a path inside the bundle", name))
	}
	if r.BundleLocation == "" {
		return problem(http.StatusConflict, fmt.Sprintf("run %s is %s: its bundle is not archived yet", r.ID, r.State))
	}
	rc, info, err := s.archive.Get(c.Request().Context(), archive.BundleKey(r.ID, clean))
	if errors.Is(err, archive.ErrNotFound) {
		return fieldProblem(http.StatusNotFound, "path", fmt.Sprintf("%q is not in run %s's bundle", clean, r.ID))
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	h := c.Response().Header()
	if info.SHA256 != "" {
		h.Set("X-Content-SHA256", info.SHA256)
	}
	if info.Size >= 0 {
		h.Set("Content-Length", fmt.Sprint(info.Size))
	}
	return c.Stream(http.StatusOK, contentType(clean), rc)
}

func contentType(name string) string {
	switch path.Ext(name) {
	case ".json":
		return "application/json"
	case ".txt", ".log", ".py", ".md", ".jsonl", ".sh":
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}

// toAPI converts a stored run to its API form.
func toAPI(r store.Run) openapi.Run {
	out := openapi.Run{
		Id:              uuid.MustParse(r.ID),
		Team:            r.TeamName,
		State:           openapi.RunState(r.State),
		CreatedAt:       r.CreatedAt,
		StartedAt:       r.StartedAt,
		FinishedAt:      r.FinishedAt,
		CancelRequested: r.CancelRequested,
		ExitCode:        r.ExitCode,
		Spec: openapi.RunSpec{
			Environment: &r.Spec.Environment, Command: &r.Spec.Command, Seed: r.Spec.Seed,
			TimeoutSeconds: &r.Spec.TimeoutSeconds, Gpus: gpusAPI(r.Spec.GPUs),
		},
	}
	if len(r.Spec.Env) > 0 {
		env := r.Spec.Env
		out.Spec.Env = &env
	}
	if r.Spec.Task != "" {
		out.Spec.Task = &r.Spec.Task
	}
	if r.Spec.GPUModel != "" {
		out.Spec.GpuModel = &r.Spec.GPUModel
	}
	if r.Spec.ExclusiveNode {
		out.Spec.ExclusiveNode = &r.Spec.ExclusiveNode
	}
	if r.ImageID != "" {
		out.ImageId = &r.ImageID
	}
	if r.Purpose != "" {
		purpose := openapi.RunPurpose(r.Purpose)
		out.Purpose = &purpose
	}
	if r.ParentID != "" {
		if id, err := uuid.Parse(r.ParentID); err == nil {
			out.Parent = &id
		}
		side, pair := r.Side, r.Pair
		out.Side, out.Pair = &side, &pair
	}
	if r.Reason != "" {
		out.Reason = &r.Reason
	}
	if r.State.Terminal() || r.State == store.Archiving {
		oom, to, lt := r.OOMKilled, r.TimedOut, r.LogTruncated
		out.OomKilled, out.TimedOut, out.LogTruncated = &oom, &to, &lt
	}
	if r.Metrics != nil {
		var m openapi.Metrics
		if json.Unmarshal(r.Metrics, &m) == nil {
			out.Metrics = &m
		}
	}
	if r.BundleLocation != "" {
		out.Bundle = &openapi.Bundle{Location: r.BundleLocation, ManifestSha256: r.ManifestSHA256}
	}
	if r.Score != nil {
		var sc openapi.Score
		if json.Unmarshal(r.Score, &sc) == nil {
			out.Score = &sc
		}
	}
	return out
}
