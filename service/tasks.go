package service

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v5"

	"github.com/repro/repro/openapi"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

// task finds a catalogue task or answers 404.
func (s *Server) task(id string) (*tasks.Task, error) {
	if s.cfg.Tasks == nil {
		return nil, problem(http.StatusNotFound, "this service has no task catalogue")
	}
	t, err := s.cfg.Tasks.Task(id)
	if err != nil {
		return nil, problem(http.StatusNotFound, fmt.Sprintf("no task %q (see GET /v1/tasks)", id))
	}
	return t, nil
}

// refs are the reference times known here: published ones and this service's calibrations.
func (s *Server) refs() tasks.RefTimes {
	if s.cfg.Tasks == nil {
		return tasks.RefTimes{}
	}
	refs, err := s.cfg.Tasks.KnownRefs(s.cfg.RefsDir)
	if err != nil {
		s.log.Warn("reading calibrated reference times", "dir", s.cfg.RefsDir, "err", err)
	}
	return refs
}

func taskToAPI(t *tasks.Task, refs tasks.RefTimes) openapi.Task {
	p := t.HardwareProfile()
	out := openapi.Task{
		Id: t.ID, Suite: t.Suite, StartRecord: t.StartRecord, TargetRecord: t.TargetRecord,
		Environment: t.Environment, Profile: t.Profile, Command: t.Command,
		TargetValLoss: t.TargetValLoss, TimeLimitMinutes: t.TimeLimitMinutes, HintLevels: t.HintLevels,
	}
	if t.Change != "" {
		out.Change = &t.Change
	}
	gpus := p.GPUs
	out.Gpus = &gpus
	if t.Dataset != "" {
		out.Dataset = &t.Dataset
	}
	if ref, ok := refs.Get(t.Profile, t.ID); ok {
		out.TStartMs, out.TTargetMs = &ref.StartMs, &ref.TargetMs
	}
	return out
}

// ListTasks lists the catalogue.
func (s *Server) ListTasks(c *echo.Context) error {
	items := []openapi.Task{}
	if s.cfg.Tasks != nil {
		refs := s.refs()
		for i := range s.cfg.Tasks.Tasks {
			items = append(items, taskToAPI(&s.cfg.Tasks.Tasks[i], refs))
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"items": items})
}

// GetTask returns one task.
func (s *Server) GetTask(c *echo.Context, id openapi.TaskID) error {
	t, err := s.task(id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, taskToAPI(t, s.refs()))
}

// GetTaskBundle hands out a task: start script, chosen hints, task.json, as a tar.
func (s *Server) GetTaskBundle(c *echo.Context, id openapi.TaskID, params openapi.GetTaskBundleParams) error {
	t, err := s.task(id)
	if err != nil {
		return err
	}
	var hints []int
	if params.Hints != nil && *params.Hints != "" {
		for _, h := range strings.Split(*params.Hints, ",") {
			n, _ := strconv.Atoi(h) // the contract's pattern allows digits 1-3 only
			if !t.HasHint(n) {
				return fieldProblem(http.StatusBadRequest, "hints", fmt.Sprintf("task %s has no hint level %d (it has %v)", t.ID, n, t.HintLevels))
			}
			hints = append(hints, n)
		}
	}
	// Built in memory first: a bundle is small, and a refusal must not leave half a tar.
	var buf bytes.Buffer
	if err := tasks.WriteBundle(&buf, t, hints, s.cfg.TaskStore); err != nil {
		if errors.Is(err, tasks.ErrNotSynced) || errors.Is(err, tasks.ErrHashMismatch) {
			return problem(http.StatusConflict, fmt.Sprintf("task %s's files are not synced on this service (run 'repro tasks sync'): %v", t.ID, err))
		}
		return err
	}
	name := t.ID
	if len(hints) > 0 {
		name += "-hints-" + strings.ReplaceAll(*params.Hints, ",", "")
	}
	c.Response().Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.tar"`, name))
	return c.Blob(http.StatusOK, "application/x-tar", buf.Bytes())
}

// GetTaskResults lists the team's scored runs of a task.
func (s *Server) GetTaskResults(c *echo.Context, id openapi.TaskID, params openapi.GetTaskResultsParams) error {
	if _, err := s.task(id); err != nil {
		return err
	}
	p := who(c)
	f := store.ListFilter{TeamID: p.team.ID, Task: id, Scored: true, Purpose: store.PurposeSubmission}
	if p.admin {
		f.TeamID = ""
	}
	if params.Limit != nil {
		f.Limit = *params.Limit
	}
	if params.Cursor != nil {
		f.Cursor = *params.Cursor
	}
	return s.listRuns(c, f)
}
