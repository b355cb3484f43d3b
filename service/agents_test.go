package service

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/openapi"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
	"github.com/repro/repro/verify"
)

// The agent-facing API (AgentHandler) against a real store, a Local archive and an
// unstarted verify.Service: no Docker, no worker.

type agentAPI struct {
	dataDir string
	st      *store.Store
	srv     *Server
	vs      *verify.Service
	h       http.Handler
	team    store.Team
}

func newAgentAPI(t *testing.T) *agentAPI {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dataDir := t.TempDir()
	st, err := store.Open(ctx, store.Options{DataDir: dataDir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close(context.Background()) })
	ar, err := archive.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cat, err := tasks.LoadCatalog()
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := cat.Select("cpu-tiny-1")
	taskStore := t.TempDir()
	if err := tasks.Sync(ctx, sub, taskStore, nil, nil); err != nil {
		t.Fatal(err)
	}
	vs := verify.New(verify.Config{DataDir: dataDir, Tasks: cat, TaskStore: taskStore, Profile: "cpu-2core", Version: "test"}, st, ar, log)
	srv, err := New(Config{DataDir: dataDir, Environments: map[string]string{"cpu-torch": "img:cpu", "agent-env": "img:agent"},
		Tasks: cat, TaskStore: taskStore, Campaigns: vs, Agents: true, Version: "test"}, st, ar, log)
	if err != nil {
		t.Fatal(err)
	}
	team, err := st.CreateTeam(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	return &agentAPI{dataDir: dataDir, st: st, srv: srv, vs: vs, h: srv.AgentHandler(nil), team: team}
}

// agentRun starts an agent run (not driven) and returns it with its token.
func (a *agentAPI) agentRun(t *testing.T, b verify.AgentBudget) (store.Campaign, string) {
	t.Helper()
	c, err := a.vs.StartAgentRun(context.Background(), verify.AgentRequest{TeamID: a.team.ID, Task: "cpu-tiny-1", Hints: []int{2},
		Environment: "agent-env", Command: []string{"python3", "agent.py"}, Budget: b})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(store.CampaignDir(a.dataDir, c.ID), "token"))
	if err != nil {
		t.Fatal(err)
	}
	return c, strings.TrimSpace(string(tok))
}

func (a *agentAPI) do(t *testing.T, h http.Handler, req *http.Request, token string) *httptest.ResponseRecorder {
	t.Helper()
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// attemptBody is a multipart body with the files and, if spec is not "", a spec part.
func attemptBody(t *testing.T, spec string, files map[string]string) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if spec != "" {
		if err := mw.WriteField("spec", spec); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range files {
		w, err := mw.CreateFormFile("files", name)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, content)
	}
	mw.Close()
	return &buf, mw.FormDataContentType()
}

func (a *agentAPI) submit(t *testing.T, token, spec string) *httptest.ResponseRecorder {
	t.Helper()
	body, ct := attemptBody(t, spec, map[string]string{"train_gpt2.py": "print('attempt')"})
	req := httptest.NewRequest(http.MethodPost, "/agent/v1/attempts", body)
	req.Header.Set("Content-Type", ct)
	return a.do(t, a.h, req, token)
}

func wantProblem(t *testing.T, rec *httptest.ResponseRecorder, status int, detail string) Problem {
	t.Helper()
	var p Problem
	if rec.Code != status || rec.Header().Get("Content-Type") != "application/problem+json" ||
		json.Unmarshal(rec.Body.Bytes(), &p) != nil || p.Status != status || !strings.Contains(p.Detail, detail) {
		t.Fatalf("got %d %s %s; want a %d problem saying %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body, status, detail)
	}
	return p
}

func TestAgentAPIAuth(t *testing.T) {
	a := newAgentAPI(t)
	_, tok := a.agentRun(t, verify.AgentBudget{})
	teamTok, err := a.st.CreateToken(context.Background(), "alpha")
	if err != nil {
		t.Fatal(err)
	}
	get := func() *http.Request { return httptest.NewRequest(http.MethodGet, "/agent/v1/budget", nil) }
	for name, token := range map[string]string{"no token": "", "unknown token": "repro_agent_" + strings.Repeat("ab", 32), "a team's token": teamTok} {
		rec := a.do(t, a.h, get(), token)
		wantProblem(t, rec, http.StatusUnauthorized, "")
		if rec.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: no WWW-Authenticate", name)
		}
	}
	req := get()
	req.Header.Set("Authorization", "Basic "+tok)
	wantProblem(t, a.do(t, a.h, req, ""), http.StatusUnauthorized, "Authorization")
	if rec := a.do(t, a.h, get(), tok); rec.Code != http.StatusOK {
		t.Errorf("with its token: %d %s", rec.Code, rec.Body)
	}
	// The agent's token does not reach the team API.
	wantProblem(t, a.do(t, a.srv.Handler(), httptest.NewRequest(http.MethodGet, "/v1/runs", nil), tok), http.StatusUnauthorized, "")
}

func TestAgentAPI(t *testing.T) {
	ctx := context.Background()
	a := newAgentAPI(t)
	c, tok := a.agentRun(t, verify.AgentBudget{MaxAttempts: 2})
	other, otherTok := a.agentRun(t, verify.AgentBudget{})

	// The budget.
	rec := a.do(t, a.h, httptest.NewRequest(http.MethodGet, "/agent/v1/budget", nil), tok)
	var st verify.BudgetStatus
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &st) != nil || st.Budget.MaxAttempts != 2 || st.AttemptsLeft != 2 ||
		st.Budget.MaxWallSeconds != verify.DefaultMaxWallSeconds || st.WallSecondsLeft <= 0 {
		t.Fatalf("budget: %d %s", rec.Code, rec.Body)
	}

	// The task: its bundle with the agent run's hints.
	rec = a.do(t, a.h, httptest.NewRequest(http.MethodGet, "/agent/v1/task", nil), tok)
	if rec.Code != http.StatusOK {
		t.Fatalf("task: %d %s", rec.Code, rec.Body)
	}
	var names []string
	tr := tar.NewReader(rec.Body)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
	}
	if got := strings.Join(names, " "); !strings.Contains(got, "task.json") || !strings.Contains(got, "train_gpt2.py") ||
		!strings.Contains(got, "level_2") || strings.Contains(got, "level_1") {
		t.Errorf("task bundle holds %v", names)
	}

	// An attempt: a run of the agent run's task (its environment, command, limit).
	rec = a.submit(t, tok, "")
	var run openapi.Run
	if rec.Code != http.StatusCreated || json.Unmarshal(rec.Body.Bytes(), &run) != nil {
		t.Fatalf("attempt: %d %s", rec.Code, rec.Body)
	}
	if run.Purpose == nil || *run.Purpose != openapi.RunPurposeAttempt || run.Parent == nil || run.Parent.String() != c.ID ||
		run.Spec.Task == nil || *run.Spec.Task != "cpu-tiny-1" || run.Team != "alpha" {
		t.Errorf("attempt %s", rec.Body)
	}
	r, err := a.st.GetRun(ctx, "", run.Id.String())
	if err != nil || r.Purpose != store.PurposeAttempt || r.ParentID != c.ID || r.TeamID != a.team.ID || r.Spec.Environment != "cpu-torch" ||
		strings.Join(r.Spec.Command, " ") != "python3 train_gpt2.py" || r.Spec.TimeoutSeconds != 300 || r.Spec.Seed == nil || r.Pair != 1 {
		t.Errorf("stored attempt %+v, %v", r, err)
	}
	if b, err := os.ReadFile(filepath.Join(store.RunPaths(a.dataDir, r.ID).Submission, "train_gpt2.py")); err != nil || string(b) != "print('attempt')" {
		t.Errorf("attempt's files: %q, %v", b, err)
	}

	// A spec naming another task, or overriding the task's command, is refused.
	p := wantProblem(t, a.submit(t, tok, `{"task":"record-1-to-2"}`), http.StatusUnprocessableEntity, "cpu-tiny-1")
	if p.Field != "spec.task" {
		t.Errorf("problem %+v", p)
	}
	wantProblem(t, a.submit(t, tok, `{"command":["sh","-c","evil"]}`), http.StatusUnprocessableEntity, "spec.command")
	// Without files: refused.
	body, ct := attemptBody(t, `{}`, nil)
	req := httptest.NewRequest(http.MethodPost, "/agent/v1/attempts", body)
	req.Header.Set("Content-Type", ct)
	wantProblem(t, a.do(t, a.h, req, tok), http.StatusBadRequest, "files")

	// The second attempt is the last one; the third is past the budget.
	if rec := a.submit(t, tok, `{"task":"cpu-tiny-1","seed":5}`); rec.Code != http.StatusCreated {
		t.Fatalf("second attempt: %d %s", rec.Code, rec.Body)
	}
	wantProblem(t, a.submit(t, tok, ""), http.StatusTooManyRequests, "attempt budget spent: 2 of 2 attempts used")

	// Its attempts are listed and readable; another agent run's are not.
	rec = a.do(t, a.h, httptest.NewRequest(http.MethodGet, "/agent/v1/attempts", nil), tok)
	var list openapi.RunList
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &list) != nil || len(list.Items) != 2 {
		t.Fatalf("attempts: %d %s", rec.Code, rec.Body)
	}
	if rec := a.do(t, a.h, httptest.NewRequest(http.MethodGet, "/agent/v1/attempts/"+run.Id.String(), nil), tok); rec.Code != http.StatusOK {
		t.Errorf("own attempt: %d %s", rec.Code, rec.Body)
	}
	rec = a.submit(t, otherTok, "")
	var otherRun openapi.Run
	if rec.Code != http.StatusCreated || json.Unmarshal(rec.Body.Bytes(), &otherRun) != nil {
		t.Fatalf("other's attempt: %d %s", rec.Code, rec.Body)
	}
	if otherRun.Parent == nil || otherRun.Parent.String() != other.ID {
		t.Errorf("other's attempt %s", rec.Body)
	}
	agentRuns, _ := a.st.RunsOf(ctx, c.ID)
	for name, id := range map[string]string{
		"another agent run's attempt": otherRun.Id.String(),
		"its own agent container run": agentRuns[0].ID,
		"an unknown run":              uuid.NewString(),
	} {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/agent/v1/attempts/" + id, "/agent/v1/attempts/" + id + "/log"} {
				wantProblem(t, a.do(t, a.h, httptest.NewRequest(http.MethodGet, path, nil), tok), http.StatusNotFound, "no attempt")
			}
		})
	}
	wantProblem(t, a.do(t, a.h, httptest.NewRequest(http.MethodGet, "/agent/v1/attempts/not-a-uuid", nil), tok), http.StatusBadRequest, "not a UUID")

	// Once the agent run is over, no more attempts (its token still reads).
	if _, err := a.vs.Cancel(ctx, store.KindAgent, "", other.ID); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, a.submit(t, otherTok, ""), http.StatusTooManyRequests, "no more attempts")
}

func TestCreateAgentRunAPI(t *testing.T) {
	ctx := context.Background()
	a := newAgentAPI(t)
	teamTok, err := a.st.CreateToken(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	post := func(spec string) *httptest.ResponseRecorder {
		body, ct := attemptBody(t, spec, map[string]string{"agent.py": "print('agent')"})
		req := httptest.NewRequest(http.MethodPost, "/v1/agent-runs", body)
		req.Header.Set("Content-Type", ct)
		return a.do(t, a.srv.Handler(), req, teamTok)
	}
	rec := post(`{"task":"cpu-tiny-1","hints":[1],"agent":{"environment":"agent-env","command":["python3","agent.py"]},"budget":{"max_attempts":3,"max_wall_seconds":120}}`)
	var out openapi.AgentRun
	if rec.Code != http.StatusCreated || json.Unmarshal(rec.Body.Bytes(), &out) != nil || rec.Header().Get("Location") != "/v1/agent-runs/"+out.Id.String() {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	if out.Task != "cpu-tiny-1" || out.Team != "alpha" || out.State != openapi.CampaignState(store.CampaignRunning) || len(out.Runs) != 1 {
		t.Errorf("agent run %s", rec.Body)
	}
	runs, _ := a.st.RunsOf(ctx, out.Id.String())
	if len(runs) != 1 || runs[0].Purpose != store.PurposeAgent || runs[0].Spec.TimeoutSeconds != 120 {
		t.Fatalf("runs %+v", runs)
	}
	if b, err := os.ReadFile(filepath.Join(store.RunPaths(a.dataDir, runs[0].ID).Submission, "agent.py")); err != nil || string(b) != "print('agent')" {
		t.Errorf("agent's files: %q, %v", b, err)
	}
	for _, tt := range []struct {
		name, spec string
		status     int
		field      string
	}{
		{"unknown environment", `{"task":"cpu-tiny-1","agent":{"environment":"nope","command":["x"]}}`, http.StatusUnprocessableEntity, "spec.agent.environment"},
		{"REPRO_ variable", `{"task":"cpu-tiny-1","agent":{"environment":"agent-env","command":["x"],"env":{"REPRO_AGENT_TOKEN":"x"}}}`, http.StatusUnprocessableEntity, "spec.agent.env.REPRO_AGENT_TOKEN"},
		{"OPENAI_ variable", `{"task":"cpu-tiny-1","agent":{"environment":"agent-env","command":["x"],"env":{"OPENAI_API_KEY":"x"}}}`, http.StatusUnprocessableEntity, "spec.agent.env.OPENAI_API_KEY"},
		{"unknown task", `{"task":"nope","agent":{"environment":"agent-env","command":["x"]}}`, http.StatusUnprocessableEntity, "task"},
		{"unconfigured LLM", `{"task":"cpu-tiny-1","llm":"gpt","agent":{"environment":"agent-env","command":["x"]}}`, http.StatusUnprocessableEntity, "spec.llm"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := wantProblem(t, post(tt.spec), tt.status, "")
			if p.Field != tt.field {
				t.Errorf("problem %+v, want field %q", p, tt.field)
			}
		})
	}
	// The agent's files of a refused request are not left in the staging folder.
	if entries, _ := os.ReadDir(filepath.Join(a.dataDir, "tmp")); len(entries) != 0 {
		t.Errorf("staging left %v", entries)
	}
}
