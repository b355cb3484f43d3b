-- An agent run's token (stored as its sha256), scoped to that agent run only.
CREATE TABLE agent_tokens (
    hash        TEXT PRIMARY KEY,
    campaign_id TEXT NOT NULL UNIQUE REFERENCES campaigns(id),
    created_at  TEXT NOT NULL
);

-- What an agent run used of its LLM budget, metered by the gateway.
CREATE TABLE llm_usage (
    campaign_id       TEXT PRIMARY KEY REFERENCES campaigns(id),
    requests          INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    cost_usd          REAL NOT NULL DEFAULT 0
)
