package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/repro/repro/fault"
)

func TestAgentTokens(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	team, _ := s.CreateTeam(ctx, "alpha")
	a := campaign(t, s, Campaign{Kind: KindAgent, TeamID: team.ID, Task: "cpu-tiny-1"})
	b := campaign(t, s, Campaign{Kind: KindAgent, TeamID: team.ID, Task: "cpu-tiny-1"})

	tokA, err := s.CreateAgentToken(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	tokB, err := s.CreateAgentToken(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if tokA == tokB || !strings.HasPrefix(tokA, "repro_agent_") || len(tokA) < len("repro_agent_")+64 {
		t.Fatalf("tokens %q, %q", tokA, tokB)
	}
	for tok, want := range map[string]string{tokA: a.ID, tokB: b.ID} {
		got, err := s.AgentRunByToken(ctx, tok)
		if err != nil || got.ID != want || got.Kind != KindAgent || got.TeamName != "alpha" || got.Task != "cpu-tiny-1" {
			t.Errorf("AgentRunByToken = %+v, %v; want campaign %s", got, err, want)
		}
	}
	// One token per agent run.
	if _, err := s.CreateAgentToken(ctx, a.ID); err == nil {
		t.Error("a second token was made for the same agent run")
	}

	teamTok, err := s.CreateToken(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{
		"unknown": "repro_agent_" + strings.Repeat("0", 64), "altered": tokA + "x", "empty": "", "a team's token": teamTok,
	} {
		_, err := s.AgentRunByToken(ctx, tok)
		if !errors.Is(err, ErrUnauthorized) || !fault.IsUser(err) {
			t.Errorf("%s token: err = %v, want a user ErrUnauthorized", name, err)
		}
	}
	// An agent's token is no team token: it does not reach /v1.
	if _, err := s.Authenticate(ctx, tokA); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("Authenticate(agent token) = %v, want ErrUnauthorized", err)
	}

	// Only the hash is stored: the plaintext is nowhere in the database files
	// (the WAL included), the hash is.
	var all []byte
	files, _ := filepath.Glob(filepath.Join(dir, "repro.db*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	if len(files) == 0 || len(all) == 0 {
		t.Fatalf("no database files under %s", dir)
	}
	for _, tok := range []string{tokA, tokB} {
		secret := strings.TrimPrefix(tok, "repro_agent_")
		if bytes.Contains(all, []byte(secret)) {
			t.Errorf("the plaintext token %s… is in the database files", tok[:20])
		}
		if !bytes.Contains(all, []byte(HashToken(tok))) {
			t.Errorf("the hash of token %s… is not in the database files (is the check above looking at the right bytes?)", tok[:20])
		}
	}
}

func TestLLMUsage(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	team, _ := s.CreateTeam(ctx, "alpha")
	a := campaign(t, s, Campaign{Kind: KindAgent, TeamID: team.ID})
	b := campaign(t, s, Campaign{Kind: KindAgent, TeamID: team.ID})

	if u, err := s.GetLLMUsage(ctx, a.ID); err != nil || u != (LLMUsage{}) {
		t.Fatalf("usage before any = %+v, %v", u, err)
	}
	if u, err := s.GetLLMUsage(ctx, uuid.NewString()); err != nil || u != (LLMUsage{}) {
		t.Fatalf("usage of an unknown campaign = %+v, %v", u, err)
	}
	got, err := s.AddLLMUsage(ctx, a.ID, LLMUsage{Requests: 1, PromptTokens: 10, CompletionTokens: 5, TotalTokens: 15, CostUSD: 0.25})
	if err != nil || got != (LLMUsage{1, 10, 5, 15, 0.25}) {
		t.Fatalf("first add = %+v, %v", got, err)
	}
	got, err = s.AddLLMUsage(ctx, a.ID, LLMUsage{Requests: 2, PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3, CostUSD: 0.5})
	if err != nil || got != (LLMUsage{3, 11, 7, 18, 0.75}) {
		t.Fatalf("second add = %+v, %v", got, err)
	}

	// Concurrent adds all count (additive and atomic).
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.AddLLMUsage(ctx, b.ID, LLMUsage{Requests: 1, PromptTokens: 100, CompletionTokens: 10, TotalTokens: 110, CostUSD: 0.5})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if u, err := s.GetLLMUsage(ctx, b.ID); err != nil || u != (LLMUsage{n, n * 100, n * 10, n * 110, n * 0.5}) {
		t.Errorf("after %d concurrent adds: %+v, %v", n, u, err)
	}
	// Campaigns are metered apart.
	if u, _ := s.GetLLMUsage(ctx, a.ID); u != (LLMUsage{3, 11, 7, 18, 0.75}) {
		t.Errorf("a's usage changed with b's: %+v", u)
	}
}

// TestAgentRunQueue: an agent container's job goes to the queue "agents", every
// other run's to the default queue (an agent must not hold its attempts' slots).
func TestAgentRunQueue(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	team, _ := s.CreateTeam(ctx, "alpha")
	c := campaign(t, s, Campaign{Kind: KindAgent, TeamID: team.ID})
	want := map[string]string{}
	for _, purpose := range []string{PurposeAgent, PurposeAttempt, PurposeSubmission, ""} {
		r, err := s.CreateRun(ctx, Run{ID: uuid.NewString(), TeamID: team.ID, Purpose: purpose, ParentID: c.ID,
			Spec: RunSpec{Environment: "e", Command: []string{"x"}}})
		if err != nil {
			t.Fatal(err)
		}
		want[r.ID] = "default"
		if purpose == PurposeAgent {
			want[r.ID] = QueueAgents
		}
	}
	for id, q := range want {
		var queue string
		var n int
		err := s.db.QueryRowContext(ctx, `SELECT queue, count(*) FROM river_job WHERE json_extract(args, '$.run_id') = ?`, id).Scan(&queue, &n)
		if err != nil || n != 1 || queue != q {
			t.Errorf("run %s: %d jobs, queue %q, %v; want one in %q", id, n, queue, err, q)
		}
	}
}
