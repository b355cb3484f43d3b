package verify

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

// Agent runs: StartAgentRun's checks and layout, the budget, and the campaign
// driven to its report with the fake worker. The task is the CPU task
// cpu-tiny-1, whose files are built in.

const agentTask = "cpu-tiny-1"

// agentService is a Service with the task catalogue and the built-in task files
// synced; started, it drives the agent runs it launches.
func (e *env) agentService(t *testing.T, start bool) *Service {
	t.Helper()
	ctx := context.Background()
	cat, err := tasks.LoadCatalog()
	if err != nil {
		t.Fatal(err)
	}
	sub, err := cat.Select(agentTask)
	if err != nil {
		t.Fatal(err)
	}
	taskStore := t.TempDir()
	if err := tasks.Sync(ctx, sub, taskStore, nil, nil); err != nil {
		t.Fatal(err)
	}
	svc := New(Config{DataDir: e.dataDir, Tasks: cat, TaskStore: taskStore, Profile: "cpu-2core", Version: "test", Poll: 5 * time.Millisecond},
		e.st, e.ar, e.log)
	if start {
		ctx, cancel := context.WithCancel(context.Background())
		if err := svc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); svc.Wait() })
	}
	return svc
}

// agentReq is a valid request whose agent files are staged in a fresh folder.
func (e *env) agentReq(t *testing.T) AgentRequest {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "agent-upload")
	writeFile(t, filepath.Join(dir, "agent.py"), "print('agent')")
	writeFile(t, filepath.Join(dir, "lib", "tools.py"), "TOOLS = []")
	return AgentRequest{TeamID: e.team.ID, Task: agentTask, Hints: []int{1, 3}, Environment: "agent-env",
		Command: []string{"python3", "agent.py"}, Env: map[string]string{"AGENT_MODE": "greedy"}, Budget: AgentBudget{MaxWallSeconds: 600},
		AgentDir: dir}
}

// agentCampaign stores an agent run with budget b and deadline, as StartAgentRun
// would (without its files), and its agent container's run (queued).
func (e *env) agentCampaign(t *testing.T, b AgentBudget, deadline time.Time) (store.Campaign, store.Run) {
	t.Helper()
	ctx := context.Background()
	spec, err := json.Marshal(AgentSpec{Task: agentTask, Hints: []int{}, Profile: "cpu-2core", Environment: "agent-env",
		Command: []string{"python3", "agent.py"}, Budget: b, Deadline: deadline})
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.st.CreateCampaign(ctx, store.Campaign{ID: uuid.NewString(), Kind: store.KindAgent, TeamID: e.team.ID, Task: agentTask, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	seed := int64(7)
	agent, err := e.st.CreateRun(ctx, store.Run{ID: uuid.NewString(), TeamID: e.team.ID, Purpose: store.PurposeAgent, Side: SideAgent, ParentID: c.ID,
		Spec: store.RunSpec{Environment: "agent-env", Command: []string{"python3", "agent.py"}, TimeoutSeconds: b.MaxWallSeconds, Seed: &seed}})
	if err != nil {
		t.Fatal(err)
	}
	return c, agent
}

// attemptFiles stages an attempt's files in a fresh folder.
func attemptFiles(t *testing.T, content string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "attempt")
	writeFile(t, filepath.Join(dir, "train_gpt2.py"), content)
	return dir
}

func attemptSpec() store.RunSpec {
	seed := int64(42)
	return store.RunSpec{Environment: "cpu-torch", Command: []string{"python3", "train_gpt2.py"}, TimeoutSeconds: 300, Task: agentTask, Seed: &seed}
}

func wantBudgetErr(t *testing.T, err error, reason string) {
	t.Helper()
	var be *BudgetError
	if !errors.As(err, &be) || !strings.Contains(be.Reason, reason) {
		t.Fatalf("err = %v, want a *BudgetError saying %q", err, reason)
	}
}

func TestStartAgentRunInput(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	svc := e.agentService(t, false)
	for _, tt := range []struct {
		name  string
		edit  func(*AgentRequest)
		field string
	}{
		{"unknown task", func(r *AgentRequest) { r.Task = "nope" }, "task"},
		{"hint level the task lacks", func(r *AgentRequest) { r.Hints = []int{1, 4} }, "hints"},
		{"hint level 0", func(r *AgentRequest) { r.Hints = []int{0} }, "hints"},
		{"negative max_attempts", func(r *AgentRequest) { r.Budget.MaxAttempts = -1 }, "budget.max_attempts"},
		{"too many attempts", func(r *AgentRequest) { r.Budget.MaxAttempts = 1001 }, "budget.max_attempts"},
		{"negative wall time", func(r *AgentRequest) { r.Budget.MaxWallSeconds = -5 }, "budget.max_wall_seconds"},
		{"wall time over a week", func(r *AgentRequest) { r.Budget.MaxWallSeconds = MaxAgentWallSeconds + 1 }, "budget.max_wall_seconds"},
		{"negative GPU-hours", func(r *AgentRequest) { r.Budget.MaxGPUHours = -0.5 }, "budget"},
		{"negative LLM tokens", func(r *AgentRequest) { r.Budget.MaxLLMTokens = -1 }, "budget"},
		{"negative LLM cost", func(r *AgentRequest) { r.Budget.MaxLLMCostUSD = -0.01 }, "budget"},
		{"no command", func(r *AgentRequest) { r.Command = nil }, "agent.command"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := e.agentReq(t)
			tt.edit(&req)
			_, err := svc.StartAgentRun(ctx, req)
			wantInputErr(t, err, tt.field)
		})
	}
	// Refused requests leave nothing behind.
	cs, _, err := e.st.ListCampaigns(ctx, store.CampaignFilter{Kind: store.KindAgent})
	if err != nil || len(cs) != 0 {
		t.Errorf("refused requests left campaigns %v, %v", ids(cs), err)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.dataDir, "campaigns")); len(entries) != 0 {
		t.Errorf("refused requests left campaign folders: %v", entries)
	}
	if _, err := New(Config{DataDir: e.dataDir}, e.st, e.ar, e.log).StartAgentRun(ctx, e.agentReq(t)); err == nil {
		t.Error("a service without a task catalogue started an agent run")
	}
}

func ids(cs []store.Campaign) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

func TestStartAgentRun(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	svc := e.agentService(t, false)
	req := e.agentReq(t)
	staged := req.AgentDir
	before := time.Now()
	c, err := svc.StartAgentRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.st.GetCampaign(ctx, store.KindAgent, e.team.ID, c.ID)
	if err != nil || got.State != store.CampaignRunning || got.Task != agentTask || got.TeamID != e.team.ID {
		t.Fatalf("campaign %+v, %v", got, err)
	}
	var spec AgentSpec
	if err := json.Unmarshal(got.Spec, &spec); err != nil {
		t.Fatal(err)
	}
	wantBudget := AgentBudget{MaxAttempts: DefaultMaxAttempts, MaxWallSeconds: 600}
	if spec.Task != agentTask || !slices.Equal(spec.Hints, []int{1, 3}) || spec.Profile != "cpu-2core" || spec.Environment != "agent-env" ||
		!slices.Equal(spec.Command, req.Command) || spec.Env["AGENT_MODE"] != "greedy" || spec.Budget != wantBudget {
		t.Errorf("spec = %+v", spec)
	}
	if d := spec.Deadline.Sub(before); d < 599*time.Second || d > 601*time.Second+time.Since(before) {
		t.Errorf("deadline %s is %s after the request, want 600 s", spec.Deadline, d)
	}

	dir := svc.campaignDir(c.ID)
	// The token: the agent's only credential, readable by its owner only, and the
	// store's.
	fi, err := os.Stat(filepath.Join(dir, "token"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "token"))
	if byToken, err := e.st.AgentRunByToken(ctx, strings.TrimSpace(string(tok))); err != nil || byToken.ID != c.ID {
		t.Errorf("the token file's token finds %+v, %v; want agent run %s", byToken, err, c.ID)
	}

	// The task: start script, the chosen hints only, task.json with the budget.
	taskDir := filepath.Join(dir, "task")
	raw, err := os.ReadFile(filepath.Join(taskDir, tasks.BundleTaskFile))
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		tasks.BundleInfo
		Budget   *AgentBudget `json:"budget"`
		Deadline *time.Time   `json:"deadline"`
		AgentAPI string       `json:"agent_api"`
	}
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatal(err)
	}
	if info.Task != agentTask || info.Budget == nil || *info.Budget != wantBudget || info.Deadline == nil || !info.Deadline.Equal(spec.Deadline) ||
		!strings.Contains(info.AgentAPI, "POST /attempts") || !slices.Equal(info.Hints, []int{1, 3}) {
		t.Errorf("task.json = %s", raw)
	}
	var hints []int
	for _, f := range info.Files {
		if _, err := os.Stat(filepath.Join(taskDir, filepath.FromSlash(f.Name))); err != nil {
			t.Errorf("task.json lists %s, not in task/: %v", f.Name, err)
		}
		if f.Role == "hint" {
			hints = append(hints, f.Level)
		}
	}
	if !slices.Equal(hints, []int{1, 3}) {
		t.Errorf("hint files of levels %v, want [1 3]", hints)
	}
	if _, err := os.Stat(filepath.Join(taskDir, "train_gpt2.py")); err != nil {
		t.Errorf("start script: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(taskDir, "hints", "level_2*")); len(m) != 0 {
		t.Errorf("hint level 2 was not asked for: %v", m)
	}

	// The agent's files were moved in, and are the agent run's submission.
	if _, err := os.Stat(staged); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the staged agent files were not moved: %v", err)
	}
	runs, err := e.st.RunsOf(ctx, c.ID)
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs %+v, %v", runs, err)
	}
	r := runs[0]
	if r.Purpose != store.PurposeAgent || r.Side != SideAgent || r.TeamID != e.team.ID || r.State != store.Queued ||
		r.Spec.TimeoutSeconds != 600 || r.Spec.Environment != "agent-env" || !slices.Equal(r.Spec.Command, req.Command) ||
		r.Spec.Env["AGENT_MODE"] != "greedy" || r.Spec.Seed == nil {
		t.Errorf("agent run %+v", r)
	}
	for name, want := range map[string]string{"agent.py": "print('agent')", "lib/tools.py": "TOOLS = []"} {
		b, err := os.ReadFile(filepath.Join(store.RunPaths(e.dataDir, r.ID).Submission, filepath.FromSlash(name)))
		if err != nil || string(b) != want {
			t.Errorf("submission %s = %q, %v", name, b, err)
		}
	}
	// Its job is in the queue of agents, not the default queue.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(e.dataDir, "repro.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var queue string
	if err := db.QueryRowContext(ctx, `SELECT queue FROM river_job WHERE json_extract(args, '$.run_id') = ?`, r.ID).Scan(&queue); err != nil || queue != store.QueueAgents {
		t.Errorf("agent run's job in queue %q, %v; want %q", queue, err, store.QueueAgents)
	}

	// max_attempts 0 is the default; an explicit one is kept.
	req = e.agentReq(t)
	req.Budget = AgentBudget{MaxAttempts: 3, MaxGPUHours: 2, MaxLLMTokens: 1000, MaxLLMCostUSD: 1.5}
	req.Hints = nil
	c2, err := svc.StartAgentRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = e.st.GetCampaign(ctx, store.KindAgent, "", c2.ID)
	spec = AgentSpec{}
	_ = json.Unmarshal(got.Spec, &spec)
	if spec.Budget != (AgentBudget{MaxAttempts: 3, MaxWallSeconds: DefaultMaxWallSeconds, MaxGPUHours: 2, MaxLLMTokens: 1000, MaxLLMCostUSD: 1.5}) ||
		spec.Hints == nil || len(spec.Hints) != 0 {
		t.Errorf("spec = %+v", spec)
	}
	if m, _ := filepath.Glob(filepath.Join(svc.campaignDir(c2.ID), "task", "hints", "*")); len(m) != 0 {
		t.Errorf("hints without asking: %v", m)
	}
}

func TestAgentBudget(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	svc := e.agentService(t, false)

	t.Run("attempts", func(t *testing.T) {
		c, _ := e.agentCampaign(t, AgentBudget{MaxAttempts: 2, MaxWallSeconds: 600}, time.Now().Add(10*time.Minute))
		st, attempts, err := svc.Budget(ctx, c)
		if err != nil || st.Attempts != 0 || st.AttemptsLeft != 2 || len(attempts) != 0 || st.WallSecondsLeft < 590 || st.WallSecondsLeft > 600 {
			t.Fatalf("fresh budget %+v, %v (the agent's own run must not count)", st, err)
		}
		for i := 1; i <= 2; i++ {
			dir := attemptFiles(t, fmt.Sprintf("attempt %d", i))
			r, err := svc.SubmitAttempt(ctx, c, dir, attemptSpec())
			if err != nil {
				t.Fatal(err)
			}
			if r.Purpose != store.PurposeAttempt || r.Side != SideAttempt || r.Pair != i || r.ParentID != c.ID || r.TeamID != e.team.ID ||
				r.State != store.Queued || r.Spec.Task != agentTask || r.Spec.Seed == nil || *r.Spec.Seed != 42 {
				t.Errorf("attempt %d = %+v", i, r)
			}
			if b, err := os.ReadFile(filepath.Join(store.RunPaths(e.dataDir, r.ID).Submission, "train_gpt2.py")); err != nil || string(b) != fmt.Sprintf("attempt %d", i) {
				t.Errorf("attempt %d's files: %q, %v", i, b, err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("attempt %d's staged files were left: %v", i, err)
			}
		}
		st, attempts, err = svc.Budget(ctx, c)
		if err != nil || st.Attempts != 2 || st.AttemptsLeft != 0 || len(attempts) != 2 {
			t.Fatalf("budget %+v, %d attempts, %v", st, len(attempts), err)
		}
		_, err = svc.SubmitAttempt(ctx, c, attemptFiles(t, "3"), attemptSpec())
		wantBudgetErr(t, err, "attempt budget spent: 2 of 2 attempts used")
		if err.Error() != "attempt budget spent: 2 of 2 attempts used" {
			t.Errorf("message %q", err)
		}
		if runs, _ := e.st.RunsOf(ctx, c.ID); len(runs) != 3 {
			t.Errorf("%d runs after a refused attempt, want the agent's and 2", len(runs))
		}
	})

	t.Run("a spec without a seed gets one", func(t *testing.T) {
		c, _ := e.agentCampaign(t, AgentBudget{MaxAttempts: 2, MaxWallSeconds: 600}, time.Now().Add(10*time.Minute))
		rs := attemptSpec()
		rs.Seed = nil
		r, err := svc.SubmitAttempt(ctx, c, attemptFiles(t, "x"), rs)
		if err != nil || r.Spec.Seed == nil {
			t.Fatalf("attempt %+v, %v", r, err)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		c, _ := e.agentCampaign(t, AgentBudget{MaxAttempts: 5, MaxWallSeconds: 600}, time.Now().Add(-time.Second))
		st, _, err := svc.Budget(ctx, c)
		if err != nil || st.WallSecondsLeft != 0 {
			t.Fatalf("budget past the deadline %+v, %v", st, err)
		}
		_, err = svc.SubmitAttempt(ctx, c, attemptFiles(t, "late"), attemptSpec())
		wantBudgetErr(t, err, "wall-time budget spent")
	})

	t.Run("GPU-hours", func(t *testing.T) {
		c, _ := e.agentCampaign(t, AgentBudget{MaxAttempts: 10, MaxWallSeconds: 3600, MaxGPUHours: 1}, time.Now().Add(time.Hour))
		now := time.Now()
		submit := func(gpus int, started, finished *time.Time) store.Run {
			t.Helper()
			rs := attemptSpec()
			rs.GPUs = gpus
			r, err := svc.SubmitAttempt(ctx, c, attemptFiles(t, "gpu"), rs)
			if err != nil {
				t.Fatal(err)
			}
			r, err = e.st.UpdateRun(ctx, r.ID, func(r *store.Run) error {
				r.StartedAt, r.FinishedAt = started, finished
				if finished != nil {
					r.State = store.Succeeded
				} else if started != nil {
					r.State = store.Running
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		at := func(d time.Duration) *time.Time { x := now.Add(d).UTC(); return &x }
		submit(2, at(-20*time.Minute), at(-10*time.Minute)) // 2 × 10 min = 1/3 h
		submit(1, at(-30*time.Minute), nil)                 // running: 1 × 30 min so far = 1/2 h
		submit(0, at(-50*time.Minute), at(-time.Minute))    // CPU only: nothing
		submit(4, nil, nil)                                 // queued: nothing yet
		st, _, err := svc.Budget(ctx, c)
		if err != nil || math.Abs(st.GPUHours-(1.0/3+0.5)) > 0.01 || st.Attempts != 4 {
			t.Fatalf("budget %+v, %v; want %.3f GPU-hours", st, err, 1.0/3+0.5)
		}
		// Still under the limit: accepted; then it starts and the limit is passed.
		r := submit(3, at(-4*time.Minute), nil) // + 3 × 4 min = 0.2 h
		_ = r
		st, _, _ = svc.Budget(ctx, c)
		if st.GPUHours < 1 {
			t.Fatalf("GPU-hours %.3f, want over 1", st.GPUHours)
		}
		_, err = svc.SubmitAttempt(ctx, c, attemptFiles(t, "more"), attemptSpec())
		wantBudgetErr(t, err, "GPU budget spent")
	})

	t.Run("LLM usage", func(t *testing.T) {
		c, _ := e.agentCampaign(t, AgentBudget{MaxAttempts: 1, MaxWallSeconds: 600}, time.Now().Add(time.Minute))
		u := store.LLMUsage{Requests: 2, PromptTokens: 30, CompletionTokens: 10, TotalTokens: 40, CostUSD: 0.01}
		if _, err := e.st.AddLLMUsage(ctx, c.ID, u); err != nil {
			t.Fatal(err)
		}
		if st, _, err := svc.Budget(ctx, c); err != nil || st.LLM != u {
			t.Errorf("budget %+v, %v; want LLM usage %+v", st, err, u)
		}
	})

	t.Run("concurrent attempts take the last ones once", func(t *testing.T) {
		c, _ := e.agentCampaign(t, AgentBudget{MaxAttempts: 3, MaxWallSeconds: 600}, time.Now().Add(10*time.Minute))
		const n = 10
		dirs := make([]string, n)
		for i := range dirs {
			dirs[i] = attemptFiles(t, fmt.Sprint(i))
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = svc.SubmitAttempt(ctx, c, dirs[i], attemptSpec())
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			var be *BudgetError
			switch {
			case err == nil:
				ok++
			case errors.As(err, &be) && be.Reason == "attempt budget spent: 3 of 3 attempts used":
			default:
				t.Errorf("unexpected error %v", err)
			}
		}
		runs, _ := e.st.RunsOf(ctx, c.ID)
		var pairs []int
		for _, r := range runs {
			if r.Purpose == store.PurposeAttempt {
				pairs = append(pairs, r.Pair)
			}
		}
		if ok != 3 || !slices.Equal(pairs, []int{1, 2, 3}) {
			t.Errorf("%d accepted, attempts numbered %v; want 3: [1 2 3]", ok, pairs)
		}
	})

	t.Run("over or canceled", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			edit func(*store.Campaign)
			want string
		}{
			{"done", func(c *store.Campaign) { c.State, c.Outcome = store.CampaignDone, AgentScored }, "is done"},
			{"error", func(c *store.Campaign) { c.State = store.CampaignError }, "is error"},
			{"canceled", func(c *store.Campaign) { c.State = store.CampaignCanceled }, "is canceled"},
			{"cancel requested", func(c *store.Campaign) { c.CancelRequested = true }, "is being canceled: no more attempts"},
		} {
			c, _ := e.agentCampaign(t, AgentBudget{MaxAttempts: 5, MaxWallSeconds: 600}, time.Now().Add(10*time.Minute))
			if _, err := e.st.UpdateCampaign(ctx, c.ID, func(c *store.Campaign) error { tt.edit(c); return nil }); err != nil {
				t.Fatal(err)
			}
			// c is the caller's stale copy: SubmitAttempt must look at the store's.
			_, err := svc.SubmitAttempt(ctx, c, attemptFiles(t, "x"), attemptSpec())
			var be *BudgetError
			if !errors.As(err, &be) || !strings.Contains(be.Reason, tt.want) {
				t.Errorf("%s: err = %v, want a *BudgetError saying %q", tt.name, err, tt.want)
			}
			if runs, _ := e.st.RunsOf(ctx, c.ID); len(runs) != 1 {
				t.Errorf("%s: an attempt was created", tt.name)
			}
		}
	})
}

// agentPlay is the fake worker's script for an agent run: the agent's run ends
// when agentEnd is set, attempt n when attempts[n] is.
type agentPlay struct {
	mu       sync.Mutex
	agentEnd func(*store.Run)
	attempts map[int]func(*store.Run)
}

func (p *agentPlay) setAgent(f func(*store.Run)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.agentEnd = f
}

func (p *agentPlay) setAttempt(n int, f func(*store.Run)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.attempts == nil {
		p.attempts = map[int]func(*store.Run){}
	}
	p.attempts[n] = f
}

func (p *agentPlay) play(r store.Run) func(*store.Run) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.Purpose {
	case store.PurposeAgent:
		return p.agentEnd
	case store.PurposeAttempt:
		return p.attempts[r.Pair]
	}
	return nil
}

func scoreJSON(valid bool, fsr float64, reason string) json.RawMessage {
	b, err := json.Marshal(tasks.Score{Task: agentTask, Profile: "cpu-2core", Valid: valid, FSR: fsr, Reason: reason, TargetValLoss: 1.9})
	if err != nil {
		panic(err)
	}
	return b
}

func scored(loss, ms float64, valid bool, fsr float64, reason string) func(*store.Run) {
	return func(r *store.Run) {
		succeed(loss, ms)(r)
		r.Score = scoreJSON(valid, fsr, reason)
	}
}

// waitAttempts waits until campaign id has n attempts, all ended.
func (e *env) waitAttempts(t *testing.T, id string, n int) []store.Run {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		runs, err := e.st.RunsOf(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		var attempts []store.Run
		done := 0
		for _, r := range runs {
			if r.Purpose == store.PurposeAttempt {
				attempts = append(attempts, r)
				if r.State.Terminal() {
					done++
				}
			}
		}
		if len(attempts) == n && done == n {
			return attempts
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent run %s: %d attempts, %d ended; want %d", id, len(attempts), done, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (e *env) agentRun(t *testing.T, id string) store.Run {
	t.Helper()
	runs, err := e.st.RunsOf(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		if r.Purpose == store.PurposeAgent {
			return r
		}
	}
	t.Fatalf("agent run %s has no agent container run", id)
	return store.Run{}
}

func agentReport(t *testing.T, c store.Campaign) AgentReport {
	t.Helper()
	var rep AgentReport
	if err := json.Unmarshal(c.Report, &rep); err != nil {
		t.Fatalf("report %s: %v", c.Report, err)
	}
	return rep
}

func (e *env) archived(t *testing.T, key string) []byte {
	t.Helper()
	rc, _, err := e.ar.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("%s not archived: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAgentRunScored(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	svc := e.agentService(t, true)
	p := &agentPlay{}
	p.setAttempt(1, scored(1.89, 30000, true, 0.4, ""))
	p.setAttempt(2, scored(2.5, 10000, false, 0.9, "final val loss 2.5 above the target 1.9")) // invalid: its FSR must not win
	p.setAttempt(3, scored(1.88, 20000, true, 0.6, ""))
	p.setAttempt(4, func(r *store.Run) { r.State, r.ExitCode, r.Reason = store.Failed, intp(1), "exit status 1" })
	e.worker(t, p.play)

	c, err := svc.StartAgentRun(ctx, e.agentReq(t))
	if err != nil {
		t.Fatal(err)
	}
	var runIDs []string
	for i := range 4 {
		r, err := svc.SubmitAttempt(ctx, c, attemptFiles(t, fmt.Sprint(i)), attemptSpec())
		if err != nil {
			t.Fatal(err)
		}
		runIDs = append(runIDs, r.ID)
	}
	e.waitAttempts(t, c.ID, 4)
	// The LLM gateway's trajectory, as it leaves it in the campaign's folder.
	traj := `{"request":{"model":"m"},"response":{"choices":[]}}` + "\n"
	writeFile(t, filepath.Join(svc.campaignDir(c.ID), "trajectory.jsonl"), traj)
	if _, err := e.st.AddLLMUsage(ctx, c.ID, store.LLMUsage{Requests: 1, TotalTokens: 30, CostUSD: 0.002}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.st.GetCampaign(ctx, "", "", c.ID); got.State != store.CampaignRunning {
		t.Fatalf("the agent run ended (%s) while its agent runs", got.State)
	}
	// While the agent works, its usage (GET /v1/agent-runs/{id}) follows.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got, _ := e.st.GetCampaign(ctx, "", "", c.ID)
		var prog BudgetStatus
		_ = json.Unmarshal(got.Progress, &prog)
		if prog.Attempts == 4 && prog.LLM.TotalTokens == 30 && prog.AttemptsLeft == DefaultMaxAttempts-4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage while the agent runs: %s; want 4 attempts and 30 LLM tokens", got.Progress)
		}
	}
	p.setAgent(succeed(0, 0))
	got := e.waitCampaign(t, c.ID)
	if got.State != store.CampaignDone || got.Outcome != AgentScored || got.Reason != "" {
		t.Fatalf("campaign %+v", got)
	}
	rep := agentReport(t, got)
	if rep.Outcome != AgentScored || rep.FSR != 0.6 || rep.Best == nil || rep.Best.RunID != runIDs[2] || !rep.Best.Valid {
		t.Errorf("outcome %s, FSR %v, best %+v; want attempt 3 (%s) with 0.6", rep.Outcome, rep.FSR, rep.Best, runIDs[2])
	}
	var listed []string
	for _, a := range rep.Attempts {
		listed = append(listed, a.RunID)
	}
	if !slices.Equal(listed, runIDs) {
		t.Errorf("attempts listed %v, want %v", listed, runIDs)
	}
	if a := rep.Attempts[1]; a.Valid || !a.Scored || a.FSR != 0.9 || !strings.Contains(a.Note, "above the target") {
		t.Errorf("invalid attempt %+v", a)
	}
	if a := rep.Attempts[3]; a.Valid || a.Scored || !strings.Contains(a.Note, "not scored") || a.State != string(store.Failed) {
		t.Errorf("failed attempt %+v", a)
	}
	agent := e.agentRun(t, c.ID)
	if rep.Agent.RunID != agent.ID || rep.Task != agentTask || rep.Team != "alpha" || rep.Profile != "cpu-2core" ||
		!slices.Equal(rep.Hints, []int{1, 3}) || rep.Budget.Attempts != 4 || rep.Budget.LLM.TotalTokens != 30 || rep.ReproVersion != "test" {
		t.Errorf("report %+v", rep)
	}
	if len(rep.Reasons) != 1 || !strings.Contains(rep.Reasons[0], runIDs[2]) {
		t.Errorf("reasons %q", rep.Reasons)
	}

	// The trajectory is archived, sealed, and named in the report.
	key := ReportKey(store.KindAgent, c.ID, "trajectory.jsonl")
	if key != "agents/"+c.ID+"/trajectory.jsonl" {
		t.Errorf("trajectory key %q", key)
	}
	if b := e.archived(t, key); string(b) != traj {
		t.Errorf("archived trajectory %q", b)
	}
	if rep.Trajectory != e.ar.Location(key) {
		t.Errorf("report names trajectory %q, want %q", rep.Trajectory, e.ar.Location(key))
	}
	if _, err := archive.PutSealed(ctx, e.ar, key, []byte("rewritten")); !errors.Is(err, archive.ErrSealed) {
		t.Errorf("the trajectory could be rewritten: %v", err)
	}
	if b := e.archived(t, ReportKey(store.KindAgent, c.ID, "report.json")); string(b) != string(got.Report) {
		t.Errorf("archived report differs from the stored one")
	}
	md := string(e.archived(t, ReportKey(store.KindAgent, c.ID, "report.md")))
	if md != rep.Markdown() {
		t.Errorf("archived report.md is not the report's Markdown")
	}
	checkAgentMarkdown(t, md, rep)
	// seal removes the folder just after it stores the outcome.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		_, err := os.Stat(svc.campaignDir(c.ID))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the campaign's folder (token, task) was left: %v", err)
		}
	}
	// Over: no more attempts.
	_, err = svc.SubmitAttempt(ctx, c, attemptFiles(t, "late"), attemptSpec())
	wantBudgetErr(t, err, "no more attempts")
}

func TestAgentRunNoValidAttemptTimedOut(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	svc := e.agentService(t, true)
	p := &agentPlay{}
	p.setAttempt(1, scored(2.3, 30000, false, 0, "final val loss 2.3 above the target 1.9"))
	p.setAttempt(2, func(r *store.Run) { r.State, r.OOMKilled, r.Reason = store.Failed, true, "out of memory" })
	e.worker(t, p.play)

	c, err := svc.StartAgentRun(ctx, e.agentReq(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := svc.SubmitAttempt(ctx, c, attemptFiles(t, fmt.Sprint(i)), attemptSpec()); err != nil {
			t.Fatal(err)
		}
	}
	e.waitAttempts(t, c.ID, 2)
	p.setAgent(func(r *store.Run) {
		r.State, r.TimedOut, r.ExitCode, r.Reason = store.Failed, true, intp(137), "stopped at its time limit of 600 s"
	})
	got := e.waitCampaign(t, c.ID)
	if got.State != store.CampaignDone || got.Outcome != AgentUnscored {
		t.Fatalf("campaign %+v", got)
	}
	rep := agentReport(t, got)
	if rep.FSR != 0 || rep.Best != nil || len(rep.Attempts) != 2 || rep.Trajectory != "" {
		t.Errorf("report %+v", rep)
	}
	if !slices.ContainsFunc(rep.Reasons, func(s string) bool { return strings.Contains(s, "no valid attempt among 2") }) ||
		!slices.ContainsFunc(rep.Reasons, func(s string) bool { return strings.Contains(s, "wall limit of 600 s") }) {
		t.Errorf("reasons %q", rep.Reasons)
	}
	if _, _, err := e.ar.Get(ctx, ReportKey(store.KindAgent, c.ID, "trajectory.jsonl")); err == nil {
		t.Error("a trajectory was archived though the agent made no LLM call")
	}
	checkAgentMarkdown(t, rep.Markdown(), rep)
}

func TestAgentRunWithoutAttempts(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	svc := e.agentService(t, true)
	p := &agentPlay{}
	p.setAgent(func(r *store.Run) { r.State, r.ExitCode, r.Reason = store.Failed, intp(2), "exit status 2" })
	e.worker(t, p.play)
	c, err := svc.StartAgentRun(ctx, e.agentReq(t))
	if err != nil {
		t.Fatal(err)
	}
	got := e.waitCampaign(t, c.ID)
	rep := agentReport(t, got)
	if got.Outcome != AgentUnscored || rep.FSR != 0 || len(rep.Attempts) != 0 || rep.Attempts == nil ||
		!slices.ContainsFunc(rep.Reasons, func(s string) bool { return strings.Contains(s, "the agent ended failed: exit status 2") }) {
		t.Errorf("campaign %+v, report %+v", got, rep)
	}
	checkAgentMarkdown(t, rep.Markdown(), rep)
}

// TestAgentRunWaitsForAttempts: attempts still running when the agent ends finish
// and count.
func TestAgentRunWaitsForAttempts(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	svc := e.agentService(t, true)
	p := &agentPlay{}
	p.setAttempt(1, scored(1.89, 30000, true, 0.2, ""))
	e.worker(t, p.play)
	c, err := svc.StartAgentRun(ctx, e.agentReq(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := svc.SubmitAttempt(ctx, c, attemptFiles(t, fmt.Sprint(i)), attemptSpec()); err != nil {
			t.Fatal(err)
		}
	}
	// Attempt 1 ends; attempt 2 is held.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		runs, _ := e.st.RunsOf(ctx, c.ID)
		if slices.ContainsFunc(runs, func(r store.Run) bool { return r.Purpose == store.PurposeAttempt && r.Pair == 1 && r.State.Terminal() }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("attempt 1 did not end")
		}
	}
	p.setAgent(succeed(0, 0))
	deadline := time.Now().Add(10 * time.Second)
	for !e.agentRun(t, c.ID).State.Terminal() {
		if time.Now().After(deadline) {
			t.Fatal("the agent's run did not end")
		}
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // 20 polls
	if got, _ := e.st.GetCampaign(ctx, "", "", c.ID); got.State != store.CampaignRunning {
		t.Fatalf("the agent run ended (%s, %s) before its running attempt", got.State, got.Outcome)
	}
	p.setAttempt(2, scored(1.87, 15000, true, 0.7, ""))
	got := e.waitCampaign(t, c.ID)
	rep := agentReport(t, got)
	if got.Outcome != AgentScored || rep.FSR != 0.7 || len(rep.Attempts) != 2 || rep.Attempts[1].State != string(store.Succeeded) {
		t.Errorf("campaign %+v, report %+v", got, rep)
	}
}

func TestAgentRunCancel(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	svc := e.agentService(t, true)
	running := func(r *store.Run) {
		now := time.Now().UTC()
		r.State, r.StartedAt = store.Running, &now
	}
	p := &agentPlay{}
	p.setAgent(running)
	p.setAttempt(1, running) // attempt 2 stays queued
	e.worker(t, p.play)
	c, err := svc.StartAgentRun(ctx, e.agentReq(t))
	if err != nil {
		t.Fatal(err)
	}
	var attempts []store.Run
	for i := range 2 {
		r, err := svc.SubmitAttempt(ctx, c, attemptFiles(t, fmt.Sprint(i)), attemptSpec())
		if err != nil {
			t.Fatal(err)
		}
		attempts = append(attempts, r)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, _ := e.st.GetRun(ctx, "", attempts[0].ID)
		if a.State == store.Running && e.agentRun(t, c.ID).State == store.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent and attempt 1 did not start")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if _, err := svc.Cancel(ctx, store.KindAgent, e.team.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	got := e.waitCampaign(t, c.ID)
	if got.State != store.CampaignCanceled {
		t.Fatalf("campaign %+v", got)
	}
	if a := e.agentRun(t, c.ID); !a.CancelRequested {
		t.Errorf("the agent's run was not asked to stop: %+v", a)
	}
	if a, _ := e.st.GetRun(ctx, "", attempts[0].ID); !a.CancelRequested {
		t.Errorf("the running attempt was not asked to stop: %+v", a)
	}
	if a, _ := e.st.GetRun(ctx, "", attempts[1].ID); a.State != store.Canceled {
		t.Errorf("the queued attempt is %s, want canceled", a.State)
	}
	_, err = svc.SubmitAttempt(ctx, c, attemptFiles(t, "late"), attemptSpec())
	wantBudgetErr(t, err, "is canceled: no more attempts")
}

func checkAgentMarkdown(t *testing.T, md string, rep AgentReport) {
	t.Helper()
	want := []string{fmt.Sprintf("FSR %.3f", rep.FSR), rep.Outcome, rep.AgentRun, rep.Agent.RunID}
	for _, a := range rep.Attempts {
		want = append(want, a.RunID)
	}
	if rep.Trajectory != "" {
		want = append(want, rep.Trajectory)
	}
	for _, w := range want {
		if !strings.Contains(md, w) {
			t.Errorf("report.md lacks %q:\n%s", w, md)
		}
	}
	for _, bad := range []string{"NaN", "%!", "<nil>", "+Inf", "-Inf"} {
		if strings.Contains(md, bad) {
			t.Errorf("report.md has %q:\n%s", bad, md)
		}
	}
}

func TestAgentReportMarkdown(t *testing.T) {
	loss, ms := 1.88, 20000.0
	best := AgentAttempt{ReportRun: ReportRun{RunID: uuid.NewString(), Side: SideAttempt, Pair: 2, State: "succeeded", ValLoss: &loss, TrainTimeMs: &ms},
		Valid: true, FSR: 0.55, Scored: true}
	rep := AgentReport{AgentRun: uuid.NewString(), Team: "alpha", Task: agentTask, Profile: "cpu-2core", Hints: []int{2}, Outcome: AgentScored,
		Best: &best, FSR: 0.55, Agent: ReportRun{RunID: uuid.NewString(), State: "failed", Reason: "exit | 1"},
		Attempts: []AgentAttempt{
			{ReportRun: ReportRun{RunID: uuid.NewString(), Side: SideAttempt, Pair: 1, State: "failed", Reason: "exit status 1"}, Note: "not scored: exit status 1"},
			best,
		},
		Budget:  BudgetStatus{Budget: AgentBudget{MaxAttempts: 20, MaxWallSeconds: 3600}, Attempts: 2, GPUHours: 0.25},
		Reasons: []string{"best valid attempt"}, Trajectory: "file:///archive/agents/x/trajectory.jsonl"}
	md := rep.Markdown()
	checkAgentMarkdown(t, md, rep)
	for _, w := range []string{"FSR 0.550 (scored)", "| 2 | " + best.RunID + " | succeeded | true | 0.550 | 1.8800 | 20000 ms |", "failed: exit \\| 1"} {
		if !strings.Contains(md, w) {
			t.Errorf("report.md lacks %q:\n%s", w, md)
		}
	}
	// An empty report renders without format errors either.
	checkAgentMarkdown(t, AgentReport{Outcome: AgentUnscored}.Markdown(), AgentReport{Outcome: AgentUnscored})
}
