package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"time"

	"github.com/repro/repro/fault"
)

// QueueAgents is the queue of agent containers: they run for the length of their
// budget and must not hold the slots their own attempts need.
const QueueAgents = "agents"

// CreateAgentToken makes the bearer token of agent run campaignID: it reaches that
// agent run's API and LLM gateway, nothing else. Only its hash is stored.
func (s *Store) CreateAgentToken(ctx context.Context, campaignID string) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	token := "repro_agent_" + hex.EncodeToString(b[:])
	if _, err := s.db.ExecContext(ctx, `INSERT INTO agent_tokens (hash, campaign_id, created_at) VALUES (?, ?, ?)`,
		HashToken(token), campaignID, fmtTime(time.Now())); err != nil {
		return "", fault.Infraf("store: create agent token: %w", err)
	}
	return token, nil
}

// AgentRunByToken returns the agent run (a campaign of kind agent) a token belongs
// to; ErrUnauthorized for any other token.
func (s *Store) AgentRunByToken(ctx context.Context, token string) (Campaign, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT campaign_id FROM agent_tokens WHERE hash = ?`, HashToken(token)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return Campaign{}, fault.AsUser(ErrUnauthorized)
	}
	if err != nil {
		return Campaign{}, fault.Infraf("store: agent token: %w", err)
	}
	return s.GetCampaign(ctx, KindAgent, "", id)
}

// LLMUsage is what an agent run used of its LLM budget.
type LLMUsage struct {
	Requests         int64   `json:"requests"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	TotalTokens      int64   `json:"total_tokens"`
	CostUSD          float64 `json:"cost_usd"`
}

// GetLLMUsage returns campaign id's LLM usage so far (zero when none).
func (s *Store) GetLLMUsage(ctx context.Context, id string) (LLMUsage, error) {
	var u LLMUsage
	err := s.db.QueryRowContext(ctx, `SELECT requests, prompt_tokens, completion_tokens, total_tokens, cost_usd FROM llm_usage WHERE campaign_id = ?`, id).
		Scan(&u.Requests, &u.PromptTokens, &u.CompletionTokens, &u.TotalTokens, &u.CostUSD)
	if errors.Is(err, sql.ErrNoRows) {
		return LLMUsage{}, nil
	}
	if err != nil {
		return u, fault.Infraf("store: llm usage of %s: %w", id, err)
	}
	return u, nil
}

// AddLLMUsage adds d to campaign id's LLM usage, atomically, and returns the total.
func (s *Store) AddLLMUsage(ctx context.Context, id string, d LLMUsage) (LLMUsage, error) {
	var out LLMUsage
	err := s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO llm_usage (campaign_id, requests, prompt_tokens, completion_tokens, total_tokens, cost_usd)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (campaign_id) DO UPDATE SET requests = requests + excluded.requests,
				prompt_tokens = prompt_tokens + excluded.prompt_tokens, completion_tokens = completion_tokens + excluded.completion_tokens,
				total_tokens = total_tokens + excluded.total_tokens, cost_usd = cost_usd + excluded.cost_usd`,
			id, d.Requests, d.PromptTokens, d.CompletionTokens, d.TotalTokens, d.CostUSD)
		if err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT requests, prompt_tokens, completion_tokens, total_tokens, cost_usd FROM llm_usage WHERE campaign_id = ?`, id).
			Scan(&out.Requests, &out.PromptTokens, &out.CompletionTokens, &out.TotalTokens, &out.CostUSD)
	})
	if err != nil {
		return out, fault.Infraf("store: add llm usage of %s: %w", id, err)
	}
	return out, nil
}
