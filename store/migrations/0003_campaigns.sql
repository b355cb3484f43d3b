-- Runs that belong to a verification, an audit or an agent run name it (parent_id),
-- their part in it (side: candidate, baseline, rerun, attempt) and their A/B pair.
-- purpose keeps them (and calibration runs) off results and leaderboards.
ALTER TABLE runs ADD COLUMN purpose TEXT NOT NULL DEFAULT 'submission';
ALTER TABLE runs ADD COLUMN parent_id TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN side TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN pair INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_parent ON runs (parent_id, seq);

-- A campaign is a set of runs driven to one outcome: a verification of a record
-- claim (verified / rejected / inconclusive), an audit of archived runs
-- (reproduced / drifted), an agent run.
CREATE TABLE campaigns (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL,
    team_id          TEXT NOT NULL REFERENCES teams(id),
    task             TEXT NOT NULL DEFAULT '',
    subject          TEXT NOT NULL DEFAULT '',
    state            TEXT NOT NULL,
    spec             TEXT NOT NULL,
    progress         TEXT,
    outcome          TEXT NOT NULL DEFAULT '',
    report           TEXT,
    report_location  TEXT NOT NULL DEFAULT '',
    reason           TEXT NOT NULL DEFAULT '',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    finished_at      TEXT
);

CREATE INDEX campaigns_kind_task ON campaigns (kind, task, outcome, seq);
CREATE INDEX campaigns_kind_team ON campaigns (kind, team_id, seq);
CREATE INDEX campaigns_state ON campaigns (state);
