package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v5"
	"github.com/labstack/echo/v5/middleware"

	"github.com/repro/repro/openapi"
	"github.com/repro/repro/store"
	"github.com/repro/repro/verify"
)

// CreateAgentRun starts an agent on a task within a budget.
func (s *Server) CreateAgentRun(c *echo.Context) error {
	p := who(c)
	if p.admin {
		return problem(http.StatusForbidden, "the admin token belongs to no team: start agent runs with a team token")
	}
	vs, err := s.campaigns()
	if err != nil {
		return err
	}
	if !s.cfg.Agents {
		return problem(http.StatusServiceUnavailable, "this service runs no agents (it has no agent network: see 'repro serve --agent-port')")
	}
	req := c.Request()
	staging, raw, _, err := s.receiveMultipart(c, "agent-", "a 'spec' part and, optionally, the agent's 'files'", true, false)
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging) // moved away on success
	var in openapi.AgentRunRequest
	if err := s.decodePart(raw, "AgentRunRequest", &in); err != nil {
		return err
	}
	if _, ok := s.cfg.Environments[in.Agent.Environment]; !ok {
		return fieldProblem(http.StatusUnprocessableEntity, "spec.agent.environment",
			fmt.Sprintf("%q is not a registered environment (registered: %s)", in.Agent.Environment, strings.Join(s.environmentNames(), ", ")))
	}
	ar := verify.AgentRequest{TeamID: p.team.ID, Task: in.Task, Environment: in.Agent.Environment, Command: in.Agent.Command, AgentDir: staging}
	if in.Hints != nil {
		ar.Hints = *in.Hints
	}
	if in.Agent.Env != nil {
		for k := range *in.Agent.Env {
			if strings.HasPrefix(k, "REPRO_") || strings.HasPrefix(k, "OPENAI_") {
				return fieldProblem(http.StatusUnprocessableEntity, "spec.agent.env."+k, "REPRO_* and OPENAI_* variables are set by repro itself")
			}
		}
		ar.Env = *in.Agent.Env
	}
	if in.Llm != nil && *in.Llm != "" {
		if !contains(s.cfg.LLMEndpoints, *in.Llm) {
			return fieldProblem(http.StatusUnprocessableEntity, "spec.llm", fmt.Sprintf("%q is not a configured LLM endpoint (configured: %s)", *in.Llm, strings.Join(s.cfg.LLMEndpoints, ", ")))
		}
		ar.LLM = *in.Llm
	}
	if b := in.Budget; b != nil {
		if b.MaxAttempts != nil {
			ar.Budget.MaxAttempts = *b.MaxAttempts
		}
		if b.MaxWallSeconds != nil {
			ar.Budget.MaxWallSeconds = *b.MaxWallSeconds
		}
		if b.MaxGpuHours != nil {
			ar.Budget.MaxGPUHours = float64(*b.MaxGpuHours)
		}
		if b.MaxLlmTokens != nil {
			ar.Budget.MaxLLMTokens = *b.MaxLlmTokens
		}
		if b.MaxLlmCostUsd != nil {
			ar.Budget.MaxLLMCostUSD = float64(*b.MaxLlmCostUsd)
		}
	}
	camp, err := vs.StartAgentRun(req.Context(), ar)
	if err != nil {
		return err
	}
	camp.TeamName = p.team.Name
	c.Response().Header().Set("Location", "/v1/agent-runs/"+camp.ID)
	out, err := s.agentRunToAPI(c, camp)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, out)
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// GetAgentRun returns one agent run.
func (s *Server) GetAgentRun(c *echo.Context, id openapi.CampaignID) error {
	return getCampaign(s, c, store.KindAgent, id, s.agentRunToAPI)
}

// ListAgentRuns pages through the team's agent runs.
func (s *Server) ListAgentRuns(c *echo.Context, params openapi.ListAgentRunsParams) error {
	items, next, err := listCampaigns(s, c, s.campaignFilter(c, store.KindAgent, params.Limit, params.Cursor), s.agentRunToAPI)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, openapi.AgentRunList{Items: items, NextCursor: next})
}

// CancelAgentRun stops the agent and its attempts.
func (s *Server) CancelAgentRun(c *echo.Context, id openapi.CampaignID) error {
	return cancelCampaignAPI(s, c, store.KindAgent, id, s.agentRunToAPI)
}

// GetAgentRunReport streams the archived report.
func (s *Server) GetAgentRunReport(c *echo.Context, id openapi.CampaignID, params openapi.GetAgentRunReportParams) error {
	return s.report(c, store.KindAgent, id, params.Format != nil && *params.Format == openapi.GetAgentRunReportParamsFormatMarkdown)
}

func (s *Server) agentRunToAPI(c *echo.Context, camp store.Campaign) (openapi.AgentRun, error) {
	cc, err := s.campaignCommon(c, camp)
	if err != nil {
		return openapi.AgentRun{}, err
	}
	out := openapi.AgentRun{
		Id: uuid.MustParse(camp.ID), Team: camp.TeamName, Task: camp.Task, State: openapi.CampaignState(camp.State),
		CancelRequested: camp.CancelRequested, CreatedAt: camp.CreatedAt, FinishedAt: camp.FinishedAt,
		Runs: cc.runs, Reason: cc.reason, Report: cc.report, ReportLocation: cc.location,
	}
	if camp.Outcome != "" {
		o := openapi.AgentRunOutcome(camp.Outcome)
		out.Outcome = &o
		var rep verify.AgentReport
		if json.Unmarshal(camp.Report, &rep) == nil {
			out.Fsr = &rep.FSR
		}
	}
	if camp.Progress != nil {
		var u map[string]any
		if json.Unmarshal(camp.Progress, &u) == nil {
			out.Usage = &u
		}
	}
	return out, nil
}

// ----- the agent's own API: served on the agent listener only ---------------------

const agentKey = "repro.agent-run"

// AgentHandler is what agent containers reach: their agent API under /agent/v1
// and the LLM gateway under /llm/v1 (llm nil: none). Every request carries the
// agent run's token, scoped to that agent run.
func (s *Server) AgentHandler(llm http.Handler) http.Handler {
	e := echo.New()
	e.HTTPErrorHandler = s.errorHandler
	e.Use(middleware.Recover())
	g := e.Group("/agent/v1", s.agentAuth)
	g.GET("/budget", s.agentBudget)
	g.GET("/task", s.agentTask)
	g.POST("/attempts", s.agentSubmit)
	g.GET("/attempts", s.agentAttempts)
	g.GET("/attempts/:id", s.agentAttempt)
	g.GET("/attempts/:id/log", s.agentAttemptLog)
	if llm != nil {
		strip := http.StripPrefix("/llm", llm)
		e.Any("/llm/*", func(c *echo.Context) error {
			strip.ServeHTTP(c.Response(), c.Request())
			return nil
		})
	}
	return e
}

func (s *Server) agentAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		token, ok := strings.CutPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
		if !ok || strings.TrimSpace(token) == "" {
			return fieldProblem(http.StatusUnauthorized, "Authorization", "the agent run's token is required (Authorization: Bearer $REPRO_AGENT_TOKEN)")
		}
		camp, err := s.store.AgentRunByToken(c.Request().Context(), strings.TrimSpace(token))
		if err != nil {
			return err
		}
		c.Set(agentKey, camp)
		return next(c)
	}
}

func agentRun(c *echo.Context) store.Campaign {
	camp, _ := c.Get(agentKey).(store.Campaign)
	return camp
}

func (s *Server) agentBudget(c *echo.Context) error {
	vs, err := s.campaigns()
	if err != nil {
		return err
	}
	st, _, err := vs.Budget(c.Request().Context(), agentRun(c))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func (s *Server) agentTask(c *echo.Context) error {
	camp := agentRun(c)
	var spec verify.AgentSpec
	_ = json.Unmarshal(camp.Spec, &spec)
	hints := make([]string, len(spec.Hints))
	for i, h := range spec.Hints {
		hints[i] = fmt.Sprint(h)
	}
	joined := strings.Join(hints, ",")
	var params openapi.GetTaskBundleParams
	if joined != "" {
		params.Hints = &joined
	}
	return s.GetTaskBundle(c, spec.Task, params)
}

// agentSubmit starts an attempt: the files (and optionally a spec with a command,
// as for a task run), an ordinary run of the task, within the budget.
func (s *Server) agentSubmit(c *echo.Context) error {
	vs, err := s.campaigns()
	if err != nil {
		return err
	}
	camp := agentRun(c)
	req := c.Request()
	staging, raw, _, err := s.receiveMultipart(c, "attempt-", "'files' parts and an optional 'spec' part", false, true)
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging) // moved away on success
	// An attempt is a run of the agent run's task: the task's rules apply.
	var in map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &in); err != nil {
			return fieldProblem(http.StatusBadRequest, "spec", "not valid JSON: "+err.Error())
		}
	}
	if in == nil {
		in = map[string]any{}
	}
	if t, ok := in["task"]; ok && t != camp.Task {
		return fieldProblem(http.StatusUnprocessableEntity, "spec.task", fmt.Sprintf("this agent run's attempts are runs of task %s", camp.Task))
	}
	in["task"] = camp.Task
	fixed, _ := json.Marshal(in)
	spec, _, err := s.checkSpec(fixed)
	if err != nil {
		return err
	}
	r, err := vs.SubmitAttempt(req.Context(), camp, staging, spec)
	var be *verify.BudgetError
	if errors.As(err, &be) {
		return problem(http.StatusTooManyRequests, be.Reason)
	}
	if err != nil {
		return err
	}
	r.TeamName = camp.TeamName
	return c.JSON(http.StatusCreated, toAPI(r))
}

// agentAttemptRun loads one of this agent run's attempts.
func (s *Server) agentAttemptRun(c *echo.Context) (store.Run, error) {
	id, err := parseRunID(c.Param("id"))
	if err != nil {
		return store.Run{}, err
	}
	r, err := s.store.GetRun(c.Request().Context(), "", id.String())
	if err != nil || r.ParentID != agentRun(c).ID || r.Purpose != store.PurposeAttempt {
		return store.Run{}, problem(http.StatusNotFound, "no attempt "+id.String()+" of this agent run")
	}
	return r, nil
}

func (s *Server) agentAttempt(c *echo.Context) error {
	r, err := s.agentAttemptRun(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, toAPI(r))
}

func (s *Server) agentAttempts(c *echo.Context) error {
	runs, err := s.store.RunsOf(c.Request().Context(), agentRun(c).ID)
	if err != nil {
		return err
	}
	out := openapi.RunList{Items: []openapi.Run{}}
	for _, r := range runs {
		if r.Purpose == store.PurposeAttempt {
			out.Items = append(out.Items, toAPI(r))
		}
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) agentAttemptLog(c *echo.Context) error {
	r, err := s.agentAttemptRun(c)
	if err != nil {
		return err
	}
	rc, err := s.openLog(c.Request().Context(), r)
	if err != nil {
		return err
	}
	defer rc.Close()
	return c.Stream(http.StatusOK, "text/plain; charset=utf-8", rc)
}
