package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/repro/repro/fault"
)

// CampaignKind names what a campaign is.
type CampaignKind string

// The kinds of campaign.
const (
	KindVerification CampaignKind = "verification" // a record claim, run N times against its baseline
	KindAudit        CampaignKind = "audit"        // archived runs re-run and compared
	KindAgent        CampaignKind = "agent"        // an agent iterating on a task
)

// CampaignState is where a campaign is: running until it has its outcome.
type CampaignState string

// Campaign states.
const (
	CampaignRunning  CampaignState = "running"
	CampaignDone     CampaignState = "done"     // Outcome and Report are set
	CampaignError    CampaignState = "error"    // the infrastructure failed it; Reason says how
	CampaignCanceled CampaignState = "canceled" // on request
)

// Terminal reports whether the campaign is over.
func (s CampaignState) Terminal() bool { return s != CampaignRunning }

// Campaign is a set of runs driven to one outcome: a verification, an audit, an
// agent run. Spec, Progress and Report are the kind's own JSON documents.
type Campaign struct {
	Seq             int64
	ID              string
	Kind            CampaignKind
	TeamID          string
	TeamName        string // read only
	Task            string // the task it concerns, if any
	Subject         string // what it is about (an audit: the audited run or verification)
	State           CampaignState
	Spec            json.RawMessage
	Progress        json.RawMessage
	Outcome         string // verified, rejected, inconclusive; reproduced, drifted; ...
	Report          json.RawMessage
	ReportLocation  string // where the sealed report is archived
	Reason          string
	CancelRequested bool
	CreatedAt       time.Time
	UpdatedAt       time.Time
	FinishedAt      *time.Time
}

// CampaignDir is where a campaign keeps its files while it runs (staged
// submissions; an agent run's token, task bundle and trajectory).
func CampaignDir(dataDir, id string) string { return filepath.Join(dataDir, "campaigns", id) }

const campaignColumns = `seq, id, kind, team_id, (SELECT name FROM teams WHERE teams.id = campaigns.team_id), task, subject, state, spec,
	progress, outcome, report, report_location, reason, cancel_requested, created_at, updated_at, finished_at`

// CreateCampaign stores a new running campaign (with its initial Progress, if any).
func (s *Store) CreateCampaign(ctx context.Context, c Campaign) (Campaign, error) {
	now := time.Now().UTC()
	c.State, c.CreatedAt, c.UpdatedAt = CampaignRunning, now, now
	if len(c.Spec) == 0 {
		c.Spec = json.RawMessage("{}")
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO campaigns (id, kind, team_id, task, subject, state, spec, progress, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		c.ID, c.Kind, c.TeamID, c.Task, c.Subject, c.State, string(c.Spec), nullJSON(c.Progress), fmtTime(now), fmtTime(now))
	if err != nil {
		return Campaign{}, fault.Infraf("store: create %s: %w", c.Kind, err)
	}
	if c.Seq, err = res.LastInsertId(); err != nil {
		return Campaign{}, fault.Infraf("store: create %s: %w", c.Kind, err)
	}
	return c, nil
}

// GetCampaign returns a campaign of the kind (""; any); teamID "" sees every team's.
func (s *Store) GetCampaign(ctx context.Context, kind CampaignKind, teamID, id string) (Campaign, error) {
	q := `SELECT ` + campaignColumns + ` FROM campaigns WHERE id = ?`
	args := []any{id}
	if kind != "" {
		q += ` AND kind = ?`
		args = append(args, kind)
	} else {
		kind = "campaign"
	}
	if teamID != "" {
		q += ` AND team_id = ?`
		args = append(args, teamID)
	}
	c, err := scanCampaign(s.db.QueryRowContext(ctx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return Campaign{}, fault.AsUser(fmt.Errorf("%s %s: %w", kind, id, ErrNotFound))
	}
	if err != nil {
		return Campaign{}, fault.Infraf("store: get %s: %w", kind, err)
	}
	return c, nil
}

// CampaignFilter selects campaigns for ListCampaigns.
type CampaignFilter struct {
	Kind    CampaignKind // required
	TeamID  string       // "" for every team
	Task    string
	Subject string
	Outcome string
	State   CampaignState
	Limit   int // default 50
	Cursor  string
}

// ListCampaigns returns campaigns newest first and the next page's cursor.
func (s *Store) ListCampaigns(ctx context.Context, f CampaignFilter) ([]Campaign, string, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	where := []string{"kind = ?"}
	args := []any{f.Kind}
	for _, c := range []struct{ col, v string }{
		{"team_id", f.TeamID}, {"task", f.Task}, {"subject", f.Subject}, {"outcome", f.Outcome}, {"state", string(f.State)},
	} {
		if c.v != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.v)
		}
	}
	if f.Cursor != "" {
		seq, err := strconv.ParseInt(f.Cursor, 10, 64)
		if err != nil || seq <= 0 {
			return nil, "", fault.Userf("cursor %q: not a cursor this server issued", f.Cursor)
		}
		where = append(where, "seq < ?")
		args = append(args, seq)
	}
	q := `SELECT ` + campaignColumns + ` FROM campaigns WHERE ` + strings.Join(where, " AND ") + ` ORDER BY seq DESC LIMIT ?`
	args = append(args, f.Limit+1)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", fault.Infraf("store: list %s: %w", f.Kind, err)
	}
	defer rows.Close()
	var out []Campaign
	for rows.Next() {
		c, err := scanCampaign(rows)
		if err != nil {
			return nil, "", fault.Infraf("store: list %s: %w", f.Kind, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fault.Infraf("store: list %s: %w", f.Kind, err)
	}
	next := ""
	if len(out) > f.Limit {
		out = out[:f.Limit]
		next = strconv.FormatInt(out[len(out)-1].Seq, 10)
	}
	return out, next, nil
}

// UnfinishedCampaigns returns the running campaigns of a kind, oldest first (to
// resume them after a restart).
func (s *Store) UnfinishedCampaigns(ctx context.Context, kind CampaignKind) ([]Campaign, error) {
	var out []Campaign
	cursor := ""
	for {
		page, next, err := s.ListCampaigns(ctx, CampaignFilter{Kind: kind, State: CampaignRunning, Limit: 500, Cursor: cursor})
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// UpdateCampaign applies fn to the current row inside a transaction and writes it
// back. A campaign that reaches a terminal state gets its FinishedAt.
func (s *Store) UpdateCampaign(ctx context.Context, id string, fn func(*Campaign) error) (Campaign, error) {
	var out Campaign
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := scanCampaign(tx.QueryRowContext(ctx, `SELECT `+campaignColumns+` FROM campaigns WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fault.AsUser(fmt.Errorf("campaign %s: %w", id, ErrNotFound))
		}
		if err != nil {
			return err
		}
		if err := fn(&c); err != nil {
			return err
		}
		c.UpdatedAt = time.Now().UTC()
		if c.State.Terminal() && c.FinishedAt == nil {
			now := c.UpdatedAt
			c.FinishedAt = &now
		}
		_, err = tx.ExecContext(ctx, `UPDATE campaigns SET state = ?, progress = ?, outcome = ?, report = ?, report_location = ?, reason = ?,
			cancel_requested = ?, updated_at = ?, finished_at = ? WHERE id = ?`,
			c.State, nullJSON(c.Progress), c.Outcome, nullJSON(c.Report), c.ReportLocation, c.Reason, c.CancelRequested,
			fmtTime(c.UpdatedAt), fmtTimePtr(c.FinishedAt), c.ID)
		out = c
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) || fault.IsUser(err) {
			return Campaign{}, err
		}
		return Campaign{}, fault.Infraf("store: update campaign %s: %w", id, err)
	}
	return out, nil
}

func nullJSON(b json.RawMessage) any {
	if b == nil {
		return nil
	}
	return string(b)
}

func scanCampaign(sc scanner) (Campaign, error) {
	var c Campaign
	var spec, created, updated string
	var progress, report, finished sql.NullString
	err := sc.Scan(&c.Seq, &c.ID, &c.Kind, &c.TeamID, &c.TeamName, &c.Task, &c.Subject, &c.State, &spec,
		&progress, &c.Outcome, &report, &c.ReportLocation, &c.Reason, &c.CancelRequested, &created, &updated, &finished)
	if err != nil {
		return Campaign{}, err
	}
	c.Spec = json.RawMessage(spec)
	if progress.Valid {
		c.Progress = json.RawMessage(progress.String)
	}
	if report.Valid {
		c.Report = json.RawMessage(report.String)
	}
	if c.CreatedAt, err = parseTime(created); err != nil {
		return Campaign{}, err
	}
	if c.UpdatedAt, err = parseTime(updated); err != nil {
		return Campaign{}, err
	}
	if finished.Valid {
		t, err := parseTime(finished.String)
		if err != nil {
			return Campaign{}, err
		}
		c.FinishedAt = &t
	}
	return c, nil
}
