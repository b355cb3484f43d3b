package verify

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/fault"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

// Agent run sides and outcomes.
const (
	SideAgent   = "agent"   // the agent's own container
	SideAttempt = "attempt" // one of its attempts: an ordinary run of the task

	AgentScored   = "scored" // at least one valid attempt: the best one's FSR is the score
	AgentUnscored = "no_valid_attempt"
)

// Defaults and bounds of an agent run's budget.
const (
	DefaultMaxAttempts    = 20   // the paper's scaffolds search over up to 20 attempts
	DefaultMaxWallSeconds = 3600 // the agent container's wall time
	MaxAgentWallSeconds   = 7 * 24 * 3600
)

// AgentBudget limits an agent run; zero means the default (attempts, wall time)
// or no limit (GPU-hours, LLM tokens and cost).
type AgentBudget struct {
	MaxAttempts    int     `json:"max_attempts"`
	MaxWallSeconds int     `json:"max_wall_seconds"`
	MaxGPUHours    float64 `json:"max_gpu_hours,omitempty"`
	MaxLLMTokens   int64   `json:"max_llm_tokens,omitempty"`
	MaxLLMCostUSD  float64 `json:"max_llm_cost_usd,omitempty"`
}

// AgentRequest asks for an agent to work on a task within a budget.
type AgentRequest struct {
	TeamID      string
	Task        string
	Hints       []int
	Environment string // where the agent runs (a registered environment)
	Command     []string
	Env         map[string]string
	Budget      AgentBudget
	LLM         string // the configured LLM endpoint it may use ("": none)
	AgentDir    string // the agent's own files, staged (moved into the campaign); "" for none
}

// AgentSpec is an agent run's plan, stored with it.
type AgentSpec struct {
	Task        string            `json:"task"`
	Hints       []int             `json:"hints"`
	Profile     string            `json:"profile"`
	Environment string            `json:"environment"`
	Command     []string          `json:"command"`
	Env         map[string]string `json:"env,omitempty"`
	Budget      AgentBudget       `json:"budget"`
	LLM         string            `json:"llm,omitempty"`
	Deadline    time.Time         `json:"deadline"` // no attempt is accepted after it
}

// BudgetError refuses an attempt past the agent run's budget.
type BudgetError struct{ Reason string }

func (e *BudgetError) Error() string { return e.Reason }

// StartAgentRun checks a request, lays out the agent's task, token and files, and
// starts the agent's container (queue "agents": it never holds its attempts' slots).
func (s *Service) StartAgentRun(ctx context.Context, req AgentRequest) (store.Campaign, error) {
	if s.cfg.Tasks == nil {
		return store.Campaign{}, inputErr("task", "this service has no task catalogue")
	}
	t, err := s.cfg.Tasks.Task(req.Task)
	if err != nil {
		return store.Campaign{}, inputErr("task", "%q is not a task (see GET /v1/tasks)", req.Task)
	}
	for _, h := range req.Hints {
		if !t.HasHint(h) {
			return store.Campaign{}, inputErr("hints", "task %s has no hint level %d (it has %v)", t.ID, h, t.HintLevels)
		}
	}
	b := &req.Budget
	if b.MaxAttempts == 0 {
		b.MaxAttempts = DefaultMaxAttempts
	}
	if b.MaxWallSeconds == 0 {
		b.MaxWallSeconds = DefaultMaxWallSeconds
	}
	switch {
	case b.MaxAttempts < 1 || b.MaxAttempts > 1000:
		return store.Campaign{}, inputErr("budget.max_attempts", "%d: between 1 and 1000", b.MaxAttempts)
	case b.MaxWallSeconds < 1 || b.MaxWallSeconds > MaxAgentWallSeconds:
		return store.Campaign{}, inputErr("budget.max_wall_seconds", "%d: between 1 and %d", b.MaxWallSeconds, MaxAgentWallSeconds)
	case b.MaxGPUHours < 0 || b.MaxLLMTokens < 0 || b.MaxLLMCostUSD < 0:
		return store.Campaign{}, inputErr("budget", "limits must not be negative")
	}
	if len(req.Command) == 0 {
		return store.Campaign{}, inputErr("agent.command", "required: how to start the agent")
	}
	spec := AgentSpec{Task: t.ID, Hints: req.Hints, Profile: s.cfg.Profile, Environment: req.Environment, Command: req.Command,
		Env: req.Env, Budget: *b, LLM: req.LLM, Deadline: time.Now().UTC().Add(time.Duration(b.MaxWallSeconds) * time.Second)}
	if spec.Hints == nil {
		spec.Hints = []int{}
	}
	c := store.Campaign{ID: uuid.NewString(), Kind: store.KindAgent, TeamID: req.TeamID, Task: t.ID}
	dir := s.campaignDir(c.ID)
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return c, fault.Infraf("agent run: %w", err)
	}
	if err := s.writeAgentTask(t, spec, filepath.Join(dir, "task")); err != nil {
		return c, err
	}
	agentDir := filepath.Join(dir, SideAgent)
	if req.AgentDir != "" {
		if err := os.Rename(req.AgentDir, agentDir); err != nil {
			return c, fault.Infraf("agent run: stage the agent's files: %w", err)
		}
	} else if err := os.MkdirAll(agentDir, 0o755); err != nil {
		return c, fault.Infraf("agent run: %w", err)
	}
	if c.Spec, err = json.Marshal(spec); err != nil {
		return c, err
	}
	if c, err = s.store.CreateCampaign(ctx, c); err != nil {
		return c, err
	}
	token, err := s.store.CreateAgentToken(ctx, c.ID)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600)
	}
	if err == nil {
		seed := newSeed(nil)
		_, err = s.submit(ctx, c, agentDir, store.Run{Purpose: store.PurposeAgent, Side: SideAgent, Spec: store.RunSpec{
			Environment: spec.Environment, Command: spec.Command, Env: spec.Env, TimeoutSeconds: b.MaxWallSeconds, Seed: &seed,
		}})
	}
	if err != nil {
		_ = s.failCampaign(ctx, c.ID, "could not start the agent: "+err.Error())
		return c, err
	}
	ok = true
	s.log.Info("agent run started", "id", c.ID, "task", t.ID, "hints", spec.Hints, "environment", spec.Environment, "budget", fmt.Sprintf("%+v", *b))
	s.launch(c)
	return c, nil
}

// writeAgentTask unpacks the task bundle (start script, chosen hints, task.json)
// into dir, with the budget added to task.json.
func (s *Service) writeAgentTask(t *tasks.Task, spec AgentSpec, dir string) error {
	var buf bytes.Buffer
	if err := tasks.WriteBundle(&buf, t, spec.Hints, s.cfg.TaskStore); err != nil {
		return fault.Infraf("agent run: task %s's files (run 'repro tasks sync'): %w", t.ID, err)
	}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fault.Infraf("agent run: task bundle: %w", err)
		}
		name := path.Clean(h.Name)
		if h.Typeflag != tar.TypeReg || strings.HasPrefix(name, "../") || path.IsAbs(name) {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return fault.Infraf("agent run: task bundle: %w", err)
		}
		if name == "task.json" {
			var info map[string]any
			if err := json.Unmarshal(data, &info); err != nil {
				return fault.Infraf("agent run: task.json: %w", err)
			}
			info["budget"] = spec.Budget
			info["deadline"] = spec.Deadline
			info["agent_api"] = "REPRO_AGENT_URL (bearer REPRO_AGENT_TOKEN): GET /budget, GET /task, POST /attempts, GET /attempts/{id}, GET /attempts/{id}/log"
			if spec.LLM != "" {
				info["llm"] = "OPENAI_BASE_URL, OPENAI_API_KEY: an OpenAI-compatible /chat/completions, metered against the budget"
			}
			if data, err = json.MarshalIndent(info, "", "  "); err != nil {
				return err
			}
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fault.Infraf("agent run: %w", err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return fault.Infraf("agent run: %w", err)
		}
	}
}

// BudgetStatus is what an agent run has used of its budget.
type BudgetStatus struct {
	Budget          AgentBudget    `json:"budget"`
	Deadline        time.Time      `json:"deadline"`
	WallSecondsLeft float64        `json:"wall_seconds_left"`
	Attempts        int            `json:"attempts"`
	AttemptsLeft    int            `json:"attempts_left"`
	GPUHours        float64        `json:"gpu_hours"`
	LLM             store.LLMUsage `json:"llm"`
}

// Budget returns what agent run c has used.
func (s *Service) Budget(ctx context.Context, c store.Campaign) (BudgetStatus, []store.Run, error) {
	var spec AgentSpec
	if err := json.Unmarshal(c.Spec, &spec); err != nil {
		return BudgetStatus{}, nil, fault.Infraf("agent run %s: spec: %w", c.ID, err)
	}
	runs, err := s.store.RunsOf(ctx, c.ID)
	if err != nil {
		return BudgetStatus{}, nil, err
	}
	st := BudgetStatus{Budget: spec.Budget, Deadline: spec.Deadline, WallSecondsLeft: math.Max(0, time.Until(spec.Deadline).Seconds())}
	var attempts []store.Run
	for _, r := range runs {
		if r.Purpose != store.PurposeAttempt {
			continue
		}
		attempts = append(attempts, r)
		st.Attempts++
		if r.StartedAt != nil && r.Spec.GPUs != 0 {
			end := time.Now()
			if r.FinishedAt != nil {
				end = *r.FinishedAt
			}
			st.GPUHours += float64(max(r.Spec.GPUs, 0)) * end.Sub(*r.StartedAt).Hours()
		}
	}
	st.AttemptsLeft = max(spec.Budget.MaxAttempts-st.Attempts, 0)
	if st.LLM, err = s.store.GetLLMUsage(ctx, c.ID); err != nil {
		return st, nil, err
	}
	return st, attempts, nil
}

// SubmitAttempt starts one attempt of agent run c from the files in dir (moved),
// unless the budget is spent (*BudgetError) or the agent run is over. The check
// and the creation are one step: two concurrent attempts cannot both take the
// last one.
func (s *Service) SubmitAttempt(ctx context.Context, c store.Campaign, dir string, rs store.RunSpec) (store.Run, error) {
	s.attemptMu.Lock()
	defer s.attemptMu.Unlock()
	c, err := s.store.GetCampaign(ctx, store.KindAgent, "", c.ID)
	if err != nil {
		return store.Run{}, err
	}
	if c.State.Terminal() {
		return store.Run{}, &BudgetError{Reason: fmt.Sprintf("agent run %s is %s: no more attempts", c.ID, c.State)}
	}
	if c.CancelRequested {
		return store.Run{}, &BudgetError{Reason: fmt.Sprintf("agent run %s is being canceled: no more attempts", c.ID)}
	}
	runs, err := s.store.RunsOf(ctx, c.ID)
	if err != nil {
		return store.Run{}, err
	}
	for _, r := range runs {
		// An attempt only comes from a living agent: once it has ended the report
		// may be sealed at any moment, and an attempt after it would be left out.
		if r.Purpose == store.PurposeAgent && r.State.Terminal() {
			return store.Run{}, &BudgetError{Reason: fmt.Sprintf("agent run %s: its agent has ended (%s): no more attempts", c.ID, r.State)}
		}
	}
	st, _, err := s.Budget(ctx, c)
	if err != nil {
		return store.Run{}, err
	}
	b := st.Budget
	switch {
	case st.Attempts >= b.MaxAttempts:
		return store.Run{}, &BudgetError{Reason: fmt.Sprintf("attempt budget spent: %d of %d attempts used", st.Attempts, b.MaxAttempts)}
	case st.WallSecondsLeft <= 0:
		return store.Run{}, &BudgetError{Reason: fmt.Sprintf("wall-time budget spent: the deadline was %s", st.Deadline.Format(time.RFC3339))}
	case b.MaxGPUHours > 0 && st.GPUHours >= b.MaxGPUHours:
		return store.Run{}, &BudgetError{Reason: fmt.Sprintf("GPU budget spent: %.3f of %.3f GPU-hours used", st.GPUHours, b.MaxGPUHours)}
	}
	rs.Task = c.Task // an attempt is a run of the agent run's task, whoever calls
	if rs.Seed == nil {
		// Every run has a known seed (submit logs it, an audit re-runs with it).
		seed := newSeed(nil)
		rs.Seed = &seed
	}
	r, err := s.submit(ctx, c, dir, store.Run{Purpose: store.PurposeAttempt, Side: SideAttempt, Pair: st.Attempts + 1, Spec: rs})
	if err == nil {
		os.RemoveAll(dir)
	}
	return r, err
}

// AgentAttempt is one attempt as the agent run's report lists it.
type AgentAttempt struct {
	ReportRun
	Valid  bool    `json:"valid"`
	FSR    float64 `json:"fsr"`
	Scored bool    `json:"scored"`
	Note   string  `json:"note,omitempty"`
}

// AgentReport is the archived outcome of an agent run.
type AgentReport struct {
	AgentRun     string         `json:"agent_run"`
	Team         string         `json:"team"`
	Task         string         `json:"task"`
	Profile      string         `json:"profile"`
	Hints        []int          `json:"hints"`
	Outcome      string         `json:"outcome"`
	Best         *AgentAttempt  `json:"best,omitempty"`
	FSR          float64        `json:"fsr"` // the best valid attempt's, 0 when none
	Attempts     []AgentAttempt `json:"attempts"`
	Agent        ReportRun      `json:"agent"` // the agent's own container: its log is in its bundle
	Budget       BudgetStatus   `json:"budget"`
	Trajectory   string         `json:"trajectory,omitempty"` // the archived LLM exchanges
	Reasons      []string       `json:"reasons"`
	CreatedAt    time.Time      `json:"created_at"`
	DecidedAt    time.Time      `json:"decided_at"`
	ReproVersion string         `json:"repro_version,omitempty"`
}

// agentProgressPolls is how many polls apart an agent run's usage is stored
// while it waits for its runs.
const agentProgressPolls = 10

// driveAgent waits for the agent (stopped at its wall limit by the sandbox), then
// for its attempts (they finish and count), then archives the trajectory and the
// report: the best valid attempt's FSR.
func (s *Service) driveAgent(ctx context.Context, id string) error {
	for poll := 0; ; poll++ {
		c, err := s.store.GetCampaign(ctx, store.KindAgent, "", id)
		if err != nil {
			return err
		}
		if c.State.Terminal() {
			return nil
		}
		if c.CancelRequested {
			return s.cancelCampaign(ctx, c)
		}
		runs, err := s.store.RunsOf(ctx, id)
		if err != nil {
			return err
		}
		idx := slices.IndexFunc(runs, func(r store.Run) bool { return r.Purpose == store.PurposeAgent })
		if idx < 0 {
			return s.failCampaign(ctx, id, "the agent's run was never created")
		}
		pending := slices.ContainsFunc(runs, func(r store.Run) bool { return !r.State.Terminal() })
		st, _, err := s.Budget(ctx, c)
		if err != nil {
			return err
		}
		// The usage is refreshed every few polls while the agent works (attempts and
		// LLM calls come and go), and once more at the end.
		if !pending || poll%agentProgressPolls == 0 {
			if err := s.setProgress(ctx, id, st); err != nil {
				return err
			}
		}
		if pending {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(s.cfg.Poll):
			}
			continue
		}
		return s.finishAgent(ctx, c, runs[idx], runs, st)
	}
}

func (s *Service) finishAgent(ctx context.Context, c store.Campaign, agent store.Run, runs []store.Run, st BudgetStatus) error {
	var spec AgentSpec
	_ = json.Unmarshal(c.Spec, &spec)
	rep := AgentReport{AgentRun: c.ID, Team: c.TeamName, Task: spec.Task, Profile: spec.Profile, Hints: spec.Hints, Agent: reportRun(agent),
		Attempts: []AgentAttempt{}, Budget: st, Reasons: []string{}, CreatedAt: c.CreatedAt, DecidedAt: time.Now().UTC(), ReproVersion: s.cfg.Version}
	for _, r := range runs {
		if r.Purpose != store.PurposeAttempt {
			continue
		}
		a := AgentAttempt{ReportRun: reportRun(r)}
		var sc tasks.Score
		if r.Score != nil && json.Unmarshal(r.Score, &sc) == nil {
			a.Scored, a.Valid, a.FSR, a.Note = true, sc.Valid, sc.FSR, sc.Reason
		} else {
			a.Note = "not scored: " + r.Reason
		}
		rep.Attempts = append(rep.Attempts, a)
		if a.Valid && (rep.Best == nil || a.FSR > rep.Best.FSR) {
			best := a
			rep.Best = &best
		}
	}
	rep.Outcome = AgentUnscored
	if rep.Best != nil {
		rep.Outcome, rep.FSR = AgentScored, rep.Best.FSR
		rep.Reasons = append(rep.Reasons, fmt.Sprintf("best valid attempt %s: FSR %.3f (of %d attempts)", rep.Best.RunID, rep.Best.FSR, len(rep.Attempts)))
	} else {
		rep.Reasons = append(rep.Reasons, fmt.Sprintf("no valid attempt among %d: FSR 0", len(rep.Attempts)))
	}
	switch {
	case agent.TimedOut:
		rep.Reasons = append(rep.Reasons, fmt.Sprintf("the agent was stopped at its wall limit of %d s", spec.Budget.MaxWallSeconds))
	case agent.State != store.Succeeded:
		rep.Reasons = append(rep.Reasons, fmt.Sprintf("the agent ended %s: %s", agent.State, agent.Reason))
	}
	traj, err := os.ReadFile(filepath.Join(s.campaignDir(c.ID), "trajectory.jsonl"))
	switch {
	case err == nil:
		key := ReportKey(store.KindAgent, c.ID, "trajectory.jsonl")
		if _, err := archive.PutSealed(ctx, s.archive, key, traj); err != nil {
			return fault.Infraf("agent run %s: archive the trajectory: %w", c.ID, err)
		}
		rep.Trajectory = s.archive.Location(key)
	case !errors.Is(err, os.ErrNotExist):
		return fault.Infraf("agent run %s: trajectory: %w", c.ID, err)
	}
	_, err = s.seal(ctx, c, rep.Outcome, rep, rep.Markdown())
	return err
}

// Markdown renders the agent run's report.
func (rep AgentReport) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Agent run %s: FSR %.3f (%s)\n\n", rep.AgentRun, rep.FSR, rep.Outcome)
	fmt.Fprintf(&b, "- Task %s (hints %v) on %s, team %s\n", rep.Task, rep.Hints, rep.Profile, rep.Team)
	fmt.Fprintf(&b, "- Budget: %d attempts, %d s wall; used %d attempts, %.3f GPU-hours, %d LLM tokens ($%.4f)\n",
		rep.Budget.Budget.MaxAttempts, rep.Budget.Budget.MaxWallSeconds, rep.Budget.Attempts, rep.Budget.GPUHours, rep.Budget.LLM.TotalTokens, rep.Budget.LLM.CostUSD)
	fmt.Fprintf(&b, "- Agent: run %s, %s, bundle %s\n", rep.Agent.RunID, stateCell(rep.Agent.State, rep.Agent.Reason), rep.Agent.Bundle)
	if rep.Trajectory != "" {
		fmt.Fprintf(&b, "- Trajectory (LLM exchanges): %s\n", rep.Trajectory)
	}
	b.WriteString("\n## Reasons\n\n")
	for _, r := range rep.Reasons {
		fmt.Fprintf(&b, "- %s\n", r)
	}
	b.WriteString("\n## Attempts\n\n| # | run | state | valid | FSR | val loss | train time | bundle |\n|---|---|---|---|---|---|---|---|\n")
	for _, a := range rep.Attempts {
		fmt.Fprintf(&b, "| %d | %s | %s | %v | %.3f | %s | %s | %s |\n", a.Pair, a.RunID, stateCell(a.State, a.Reason), a.Valid, a.FSR,
			floatCell(a.ValLoss, "%.4f"), floatCell(a.TrainTimeMs, "%.0f ms"), a.Bundle)
	}
	return b.String()
}
