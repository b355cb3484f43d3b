package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/repro/repro/internal/testenv"
)

// standIn is the only test double of the agent tests: an OpenAI-compatible model
// server on 127.0.0.1. It answers only requests that carry the provider key, and
// reports 10 prompt tokens and min(max_tokens, 20) completion tokens.
type standIn struct {
	srv      *httptest.Server
	mu       sync.Mutex
	auths    []string
	bodies   []string
	badCalls int
}

const standInKey = "sk-stand-in-provider-key"

func newStandIn(t *testing.T) *standIn {
	s := &standIn{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.auths = append(s.auths, r.Header.Get("Authorization"))
		s.bodies = append(s.bodies, string(body))
		s.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+standInKey || r.URL.Path != "/v1/chat/completions" {
			s.mu.Lock()
			s.badCalls++
			s.mu.Unlock()
			http.Error(w, `{"error":{"message":"bad key or path"}}`, http.StatusUnauthorized)
			return
		}
		var req struct {
			MaxTokens *int `json:"max_tokens"`
		}
		json.Unmarshal(body, &req)
		completion := 20
		if req.MaxTokens != nil && *req.MaxTokens < completion {
			completion = *req.MaxTokens
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","model":"stand-in","choices":[{"index":0,"message":{"role":"assistant","content":"try a learning-rate schedule"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":%d,"total_tokens":%d}}`,
			completion, 10+completion)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// agentRunView is the part of an agent run the tests read.
type agentRunView struct {
	ID      string          `json:"id"`
	State   string          `json:"state"`
	Outcome string          `json:"outcome"`
	FSR     *float64        `json:"fsr"`
	Reason  string          `json:"reason"`
	Usage   json.RawMessage `json:"usage"`
	Report  json.RawMessage `json:"report"`
	Runs    []struct {
		ID    string `json:"id"`
		Side  string `json:"side"`
		State string `json:"state"`
	} `json:"runs"`
}

type agentReport struct {
	Outcome string  `json:"outcome"`
	FSR     float64 `json:"fsr"`
	Best    *struct {
		RunID string  `json:"run_id"`
		FSR   float64 `json:"fsr"`
		Valid bool    `json:"valid"`
	} `json:"best"`
	Attempts []struct {
		RunID string  `json:"run_id"`
		Valid bool    `json:"valid"`
		FSR   float64 `json:"fsr"`
	} `json:"attempts"`
	Agent struct {
		RunID  string `json:"run_id"`
		State  string `json:"state"`
		Bundle string `json:"bundle"`
	} `json:"agent"`
	Budget struct {
		Attempts int `json:"attempts"`
		LLM      struct {
			Requests    int64 `json:"requests"`
			TotalTokens int64 `json:"total_tokens"`
		} `json:"llm"`
	} `json:"budget"`
	Trajectory string   `json:"trajectory"`
	Reasons    []string `json:"reasons"`
}

// The CI evidence for agent runs: a scripted agent (stdlib Python in the
// CPU environment, no LLM) scored by its attempt's FSR; attempts refused past the
// budget; an agent that never stops stopped at its wall limit with everything
// archived; the LLM gateway against a stand-in model server: key injected, tokens
// metered, refused past the token budget; and an agent container that reaches
// nothing but repro's agent listener.
func TestAgentRuns(t *testing.T) {
	docker := testenv.Docker(t)
	if _, err := docker.ImageInspect(context.Background(), torchBaseImage); err != nil {
		testenv.Missing(t, "docker", fmt.Sprintf("image %s missing (run scripts/base-torch.sh): %v", torchBaseImage, err))
	}
	model := newStandIn(t)
	endpoints := filepath.Join(t.TempDir(), "llm.json")
	os.WriteFile(endpoints, []byte(fmt.Sprintf(`[{"name":"stand-in","base_url":%q,"api_key_env":"REPRO_E2E_LLM_KEY","models":["stand-in"]}]`, model.srv.URL+"/v1")), 0o644)
	t.Setenv("REPRO_E2E_LLM_KEY", standInKey)
	s := startStack(t, "--llm-endpoints", endpoints)
	tok := s.team("agents")
	task := catalogTask(t, cpuTask)
	targetScript := cpuTaskFile(t, task.Target().Script)
	agentPy, err := os.ReadFile("testdata/agent.py")
	if err != nil {
		t.Fatal(err)
	}

	// Reference times, so that attempts get an FSR: a short calibration (2 runs each).
	cal := exec.Command(reproBin, "tasks", "calibrate", cpuTask, "--runs", "2", "--data-dir", s.dataDir)
	cal.Env = append(os.Environ(), "REPRO_URL="+s.url, "REPRO_TOKEN="+tok)
	if out, err := cal.CombinedOutput(); err != nil {
		t.Fatalf("calibrate: %v\n%s", err, out)
	}

	start := func(mode string, budget map[string]any, llm string, extra ...string) agentRunView {
		t.Helper()
		spec := map[string]any{"task": cpuTask, "hints": []int{1}, "budget": budget,
			"agent": map[string]any{"environment": "cpu-torch", "command": append([]string{"python3", "agent.py", mode}, extra...)}}
		if llm != "" {
			spec["llm"] = llm
		}
		js, _ := json.Marshal(spec)
		body, ct := multipartBody(t, string(js), map[string]string{"agent.py": string(agentPy), "faster.py": string(targetScript)})
		code, _, b := s.request("POST", "/v1/agent-runs", tok, body, ct)
		if code != 201 {
			t.Fatalf("POST /v1/agent-runs: %d %s", code, b)
		}
		var a agentRunView
		json.Unmarshal(b, &a)
		return a
	}
	wait := func(id string) (agentRunView, agentReport, string) {
		t.Helper()
		deadline := time.Now().Add(6 * time.Minute)
		for {
			code, _, b := s.request("GET", "/v1/agent-runs/"+id, tok, nil, "")
			var a agentRunView
			if code != 200 || json.Unmarshal(b, &a) != nil {
				t.Fatalf("GET agent run: %d %s", code, b)
			}
			if a.State != "running" {
				var rep agentReport
				json.Unmarshal(a.Report, &rep)
				log := ""
				if rep.Agent.RunID != "" {
					_, _, lb := s.request("GET", "/v1/runs/"+rep.Agent.RunID+"/files/log.txt", tok, nil, "")
					log = string(lb)
				}
				t.Logf("agent run %s: %s %s, reasons %q\nagent log:\n%s", id, a.State, a.Outcome, rep.Reasons, log)
				return a, rep, log
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent run %s still running: %s", id, b)
			}
			time.Sleep(time.Second)
		}
	}

	t.Run("scored by its attempt", func(t *testing.T) {
		a, rep, log := wait(start("score", map[string]any{"max_attempts": 3, "max_wall_seconds": 300}, "").ID)
		if a.State != "done" || a.Outcome != "scored" || rep.Best == nil || len(rep.Attempts) != 1 {
			t.Fatalf("agent run: %+v report %+v", a, rep)
		}
		att := s.getTaskRun(tok, rep.Attempts[0].RunID)
		if att.Purpose != "attempt" || att.Parent != a.ID || att.Score == nil || !att.Score.Valid || att.Bundle == nil {
			t.Fatalf("the attempt as an ordinary run: %+v", att)
		}
		t.Logf("MEASURED agent attempt: FSR %.3f, train %.0f ms, val loss %v", att.Score.FSR, taskDeref(att.Score.TrainTimeMs), taskLoss(att.Score.FinalValLoss))
		if rep.FSR != att.Score.FSR || rep.Best.RunID != att.ID || a.FSR == nil || *a.FSR != att.Score.FSR {
			t.Errorf("agent run FSR %v (best %+v), its attempt's %v", rep.FSR, rep.Best, att.Score.FSR)
		}
		for _, want := range []string{"agent: task " + cpuTask, `"max_attempts": 3`, "agent: attempt submitted: 201", "agent: attempt log 200", "agent: done"} {
			if !strings.Contains(log, want) {
				t.Errorf("the agent's log lacks %q", want)
			}
		}
		// The task came with its hint, read-only at /task; the attempt's submission is the agent's file.
		if got := s.object("runs/" + att.ID + "/submission/" + task.ScriptName); !bytes.Equal(got, targetScript) {
			t.Errorf("the archived attempt is not the agent's faster.py")
		}
		code, _, md := s.request("GET", "/v1/agent-runs/"+a.ID+"/report?format=markdown", tok, nil, "")
		if code != 200 || !strings.Contains(string(md), att.ID) {
			t.Errorf("markdown report: %d %s", code, md)
		}
		// Attempts are not submissions: the task's results stay empty.
		if code, _, b := s.request("GET", "/v1/tasks/"+cpuTask+"/results", tok, nil, ""); code != 200 || !strings.Contains(string(b), `"items":[]`) {
			t.Errorf("results: %d %s", code, b)
		}
	})

	t.Run("refused past max attempts", func(t *testing.T) {
		// Through the CLI, as a team would start it.
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "agent.py"), agentPy, 0o644)
		stdout, stderr, code := s.cli(tok, dir, "agent", "--task", cpuTask, "--env", "cpu-torch", "--hints", "1",
			"--max-attempts", "1", "--max-wall", "120", "--detach", "agent.py", "--", "python3", "agent.py", "greedy")
		id := strings.TrimSpace(stdout)
		if code != 0 || len(id) != 36 {
			t.Fatalf("repro agent --detach: exit %d, stdout %q, stderr %s", code, stdout, stderr)
		}
		a, rep, log := wait(id)
		stdout, _, code = s.cli(tok, dir, "agent", "status", id)
		if code != 0 || !strings.Contains(stdout, "no_valid_attempt") || !strings.Contains(stdout, rep.Attempts[0].RunID) {
			t.Errorf("repro agent status: exit %d\n%s", code, stdout)
		}
		if a.State != "done" || len(rep.Attempts) != 1 || rep.Budget.Attempts != 1 {
			t.Fatalf("agent run %+v, %d attempts", a, len(rep.Attempts))
		}
		if !strings.Contains(log, "agent: attempt 1: 201") || !strings.Contains(log, "agent: attempt 2: 429") || !strings.Contains(log, "attempt budget spent: 1 of 1 attempts used") {
			t.Errorf("the second attempt was not refused with 429 naming the budget")
		}
	})

	t.Run("stopped at the wall limit", func(t *testing.T) {
		began := time.Now()
		a, rep, log := wait(start("forever", map[string]any{"max_wall_seconds": 15}, "").ID)
		took := time.Since(began)
		agent := s.getTaskRun(tok, rep.Agent.RunID)
		t.Logf("MEASURED wall-limited agent: ended after %.1f s (limit 15 s)", took.Seconds())
		if a.State != "done" || agent.State != "failed" || !strings.Contains(strings.Join(rep.Reasons, " "), "wall limit") {
			t.Errorf("agent run %s, agent %s (%s), reasons %q", a.State, agent.State, agent.Reason, rep.Reasons)
		}
		if !strings.Contains(log, "agent: waiting forever") || agent.Bundle == nil || rep.Agent.Bundle == "" {
			t.Errorf("the agent's log or bundle was not archived")
		}
		if len(s.object("agents/"+a.ID+"/report.json")) == 0 {
			t.Errorf("no archived report")
		}
	})

	t.Run("LLM gateway and isolation", func(t *testing.T) {
		// A canary on every host address, and the addresses the agent must not reach.
		canary, err := net.Listen("tcp", "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		defer canary.Close()
		var hits atomic.Int64
		go func() {
			for {
				c, err := canary.Accept()
				if err != nil {
					return
				}
				hits.Add(1)
				c.Close()
			}
		}()
		cport := canary.Addr().(*net.TCPAddr).Port
		var targets []string
		for _, ip := range hostIPv4s(t) {
			targets = append(targets, fmt.Sprintf("%s:%d", ip, cport))
		}
		_, apiPort, _ := net.SplitHostPort(strings.TrimPrefix(s.url, "http://"))
		_, modelPort, _ := net.SplitHostPort(strings.TrimPrefix(model.srv.URL, "http://"))
		_, minioPort, _ := net.SplitHostPort(s.minioSrv.Endpoint)
		for _, ip := range hostIPv4s(t) {
			targets = append(targets, ip+":"+apiPort, ip+":"+modelPort, ip+":"+minioPort)
		}
		targets = append(targets, "1.1.1.1:80")

		a, rep, log := wait(start("llm", map[string]any{"max_wall_seconds": 120, "max_llm_tokens": 50}, "stand-in", targets...).ID)
		if a.State != "done" {
			t.Fatalf("agent run: %+v", a)
		}
		for i, want := range []string{"agent: llm call 1: 200", "agent: llm call 2: 200", "agent: llm call 3: 429"} {
			if !strings.Contains(log, want) {
				t.Errorf("llm call %d: the agent's log lacks %q", i+1, want)
			}
		}
		if !strings.Contains(log, "budget_exceeded") {
			t.Errorf("the refusal does not say budget_exceeded")
		}
		// Metered: 30 tokens, then 30 with max_tokens capped at the 20 left; the third refused.
		if rep.Budget.LLM.Requests != 2 || rep.Budget.LLM.TotalTokens != 60 {
			t.Errorf("metered %d requests, %d tokens; want 2, 60", rep.Budget.LLM.Requests, rep.Budget.LLM.TotalTokens)
		}
		model.mu.Lock()
		auths, bodies, bad := append([]string{}, model.auths...), append([]string{}, model.bodies...), model.badCalls
		model.mu.Unlock()
		if len(auths) != 2 || bad != 0 {
			t.Errorf("the model server got %d calls (%d with a wrong key), want 2 with the injected key", len(auths), bad)
		}
		if len(bodies) == 2 && !strings.Contains(bodies[1], `"max_tokens":20`) {
			t.Errorf("the second call was not capped to the 20 tokens left: %s", bodies[1])
		}
		for _, h := range auths {
			if strings.Contains(h, "repro_agent_") {
				t.Errorf("the agent's token reached the model server")
			}
		}
		// The trajectory is archived: one line per exchange, refusals included, never the key.
		if rep.Trajectory == "" {
			t.Fatal("no trajectory archived")
		}
		traj := s.object("agents/" + a.ID + "/trajectory.jsonl")
		if n := bytes.Count(traj, []byte("\n")); n != 3 || bytes.Contains(traj, []byte(standInKey)) || !bytes.Contains(traj, []byte("make train_gpt2.py faster (1)")) {
			t.Errorf("trajectory: %d lines, contains the key %v:\n%s", n, bytes.Contains(traj, []byte(standInKey)), traj)
		}
		// Isolation: every other address is blocked, and the canary saw no connection.
		for _, target := range targets {
			if !strings.Contains(log, "agent: reach "+target+": blocked") {
				t.Errorf("the agent reached (or did not try) %s", target)
			}
		}
		if hits.Load() != 0 {
			t.Errorf("the canary on the host accepted %d connections from the agent", hits.Load())
		}
	})
}
