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

	"github.com/riverqueue/river"

	"github.com/repro/repro/fault"
)

// State is where a run is in its life:
// queued → preparing → running → archiving → succeeded | failed | error | canceled.
type State string

const (
	Queued    State = "queued"
	Preparing State = "preparing"
	Running   State = "running"
	Archiving State = "archiving"
	Succeeded State = "succeeded"
	Failed    State = "failed" // the script is at fault
	Error     State = "error"  // the infrastructure is at fault
	Canceled  State = "canceled"
)

// States lists every state in life order.
var States = []State{Queued, Preparing, Running, Archiving, Succeeded, Failed, Error, Canceled}

// Terminal reports whether the run is over.
func (s State) Terminal() bool {
	return s == Succeeded || s == Failed || s == Error || s == Canceled
}

// Active reports whether a worker holds the run (it has left the queue but not ended).
func (s State) Active() bool { return s == Preparing || s == Running || s == Archiving }

// RunSpec is what the submitter asked for.
type RunSpec struct {
	Environment    string            `json:"environment"`
	Command        []string          `json:"command"`
	TimeoutSeconds int               `json:"timeout_seconds"`
	GPUs           int               `json:"gpus"` // -1: all of a node's
	GPUModel       string            `json:"gpu_model,omitempty"`
	ExclusiveNode  bool              `json:"exclusive_node,omitempty"`
	Seed           *int64            `json:"seed,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	Task           string            `json:"task,omitempty"`
	// ImageID pins the exact image (an audit re-runs the archived one); the worker
	// restores it from the archive when the host lacks it, and never builds.
	ImageID string `json:"image_id,omitempty"`
}

// Purposes of a run. Only submissions appear in a task's results and scores.
const (
	PurposeSubmission   = "submission"
	PurposeCalibration  = "calibration"
	PurposeVerification = "verification"
	PurposeAudit        = "audit"
	PurposeAttempt      = "attempt" // an agent run's attempt
	PurposeAgent        = "agent"   // an agent run's agent container
)

// Run is one submitted run and everything known about it.
type Run struct {
	Seq             int64
	ID              string
	TeamID          string
	TeamName        string // read only
	State           State
	Spec            RunSpec
	Image           string
	ImageID         string
	ExitCode        *int
	OOMKilled       bool
	TimedOut        bool
	LogTruncated    bool
	CancelRequested bool
	Reason          string
	Metrics         json.RawMessage // tasks.Metrics as JSON, nil until parsed
	Score           json.RawMessage // tasks.Score as JSON for task runs, nil otherwise
	BundleLocation  string
	ManifestSHA256  string
	Worker          string
	Purpose         string // PurposeSubmission unless set
	ParentID        string // the campaign (verification, audit, agent run) it belongs to
	Side            string // its part there: candidate, baseline, rerun, attempt
	Pair            int    // its A/B pair in a verification (1-based), 0 otherwise
	CreatedAt       time.Time
	StartedAt       *time.Time
	FinishedAt      *time.Time
	UpdatedAt       time.Time
}

// RunArgs is the queue job that drives one run.
type RunArgs struct {
	RunID string `json:"run_id"`
}

// Kind names the job kind for River.
func (RunArgs) Kind() string { return "run" }

// InsertOpts: few attempts; a retry only happens for infrastructure faults before the
// script started (the worker decides).
func (RunArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{MaxAttempts: 3} }

const runColumns = `seq, id, team_id, state, spec, image, image_id, exit_code, oom_killed, timed_out, log_truncated,
	cancel_requested, reason, metrics, bundle_location, manifest_sha256, worker, created_at, started_at, finished_at, updated_at,
	(SELECT name FROM teams WHERE teams.id = runs.team_id), score, purpose, parent_id, side, pair`

// CreateRun stores a queued run and enqueues its job in one transaction.
func (s *Store) CreateRun(ctx context.Context, r Run) (Run, error) {
	if r.State == "" {
		r.State = Queued
	}
	if r.Purpose == "" {
		r.Purpose = PurposeSubmission
	}
	now := time.Now().UTC()
	r.CreatedAt, r.UpdatedAt = now, now
	spec, err := json.Marshal(r.Spec)
	if err != nil {
		return Run{}, err
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO runs (id, team_id, state, spec, image, task, purpose, parent_id, side, pair, created_at, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ID, r.TeamID, r.State, string(spec), r.Image, r.Spec.Task, r.Purpose, r.ParentID, r.Side, r.Pair, fmtTime(now), fmtTime(now))
		if err != nil {
			return err
		}
		if r.Seq, err = res.LastInsertId(); err != nil {
			return err
		}
		var opts *river.InsertOpts
		if r.Purpose == PurposeAgent {
			opts = &river.InsertOpts{Queue: QueueAgents}
		}
		_, err = s.river.InsertTx(ctx, tx, RunArgs{RunID: r.ID}, opts)
		return err
	})
	if err != nil {
		return Run{}, fault.Infraf("store: create run: %w", err)
	}
	return r, nil
}

// GetRun returns a run; teamID "" sees every team's runs. ErrNotFound otherwise.
func (s *Store) GetRun(ctx context.Context, teamID, id string) (Run, error) {
	q := `SELECT ` + runColumns + ` FROM runs WHERE id = ?`
	args := []any{id}
	if teamID != "" {
		q += ` AND team_id = ?`
		args = append(args, teamID)
	}
	r, err := scanRun(s.db.QueryRowContext(ctx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return Run{}, fault.AsUser(fmt.Errorf("run %s: %w", id, ErrNotFound))
	}
	if err != nil {
		return Run{}, fault.Infraf("store: get run: %w", err)
	}
	return r, nil
}

// ListFilter selects runs for ListRuns.
type ListFilter struct {
	TeamID string // "" for every team
	State  State  // "" for every state
	Task   string // "" for runs of any task or none
	Scored bool   // only runs that have a score
	// Purpose: "" for runs of any purpose, else only runs with this purpose.
	Purpose string
	Limit   int    // default 50
	Cursor  string // from the previous page
}

// ListRuns returns runs newest first and the cursor of the next page ("" at the end).
func (s *Store) ListRuns(ctx context.Context, f ListFilter) ([]Run, string, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	var where []string
	var args []any
	if f.TeamID != "" {
		where = append(where, "team_id = ?")
		args = append(args, f.TeamID)
	}
	if f.State != "" {
		where = append(where, "state = ?")
		args = append(args, f.State)
	}
	if f.Task != "" {
		where = append(where, "task = ?")
		args = append(args, f.Task)
	}
	if f.Scored {
		where = append(where, "score IS NOT NULL")
	}
	if f.Purpose != "" {
		where = append(where, "purpose = ?")
		args = append(args, f.Purpose)
	}
	if f.Cursor != "" {
		seq, err := strconv.ParseInt(f.Cursor, 10, 64)
		if err != nil || seq <= 0 {
			return nil, "", fault.Userf("cursor %q: not a cursor this server issued", f.Cursor)
		}
		where = append(where, "seq < ?")
		args = append(args, seq)
	}
	q := `SELECT ` + runColumns + ` FROM runs`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, f.Limit+1)
	runs, err := s.queryRuns(ctx, q, args...)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(runs) > f.Limit {
		runs = runs[:f.Limit]
		next = strconv.FormatInt(runs[len(runs)-1].Seq, 10)
	}
	return runs, next, nil
}

// RunsOf returns the runs of campaign parentID, oldest first.
func (s *Store) RunsOf(ctx context.Context, parentID string) ([]Run, error) {
	return s.queryRuns(ctx, `SELECT `+runColumns+` FROM runs WHERE parent_id = ? ORDER BY seq`, parentID)
}

// ActiveRuns returns the runs a worker holds (preparing, running, archiving), oldest first.
func (s *Store) ActiveRuns(ctx context.Context) ([]Run, error) {
	return s.queryRuns(ctx, `SELECT `+runColumns+` FROM runs WHERE state IN (?, ?, ?) ORDER BY seq`, Preparing, Running, Archiving)
}

// CountByState returns how many runs are in each state.
func (s *Store) CountByState(ctx context.Context) (map[State]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, count(*) FROM runs GROUP BY state`)
	if err != nil {
		return nil, fault.Infraf("store: count runs: %w", err)
	}
	defer rows.Close()
	out := map[State]int{}
	for rows.Next() {
		var st State
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fault.Infraf("store: count runs: %w", err)
		}
		out[st] = n
	}
	return out, rows.Err()
}

func (s *Store) queryRuns(ctx context.Context, q string, args ...any) ([]Run, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fault.Infraf("store: list runs: %w", err)
	}
	defer rows.Close()
	var runs []Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fault.Infraf("store: list runs: %w", err)
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fault.Infraf("store: list runs: %w", err)
	}
	return runs, nil
}

// UpdateRun applies fn to the current row inside a transaction and writes it back.
// fn may return an error (e.g. ErrConflict for a state it does not accept) to abort.
func (s *Store) UpdateRun(ctx context.Context, id string, fn func(*Run) error) (Run, error) {
	var out Run
	err := s.tx(ctx, func(tx *sql.Tx) error {
		r, err := scanRun(tx.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fault.AsUser(fmt.Errorf("run %s: %w", id, ErrNotFound))
		}
		if err != nil {
			return err
		}
		if err := fn(&r); err != nil {
			return err
		}
		r.UpdatedAt = time.Now().UTC()
		var metrics, score any
		if r.Metrics != nil {
			metrics = string(r.Metrics)
		}
		if r.Score != nil {
			score = string(r.Score)
		}
		var exit any
		if r.ExitCode != nil {
			exit = *r.ExitCode
		}
		_, err = tx.ExecContext(ctx, `UPDATE runs SET state = ?, image = ?, image_id = ?, exit_code = ?, oom_killed = ?, timed_out = ?,
			log_truncated = ?, cancel_requested = ?, reason = ?, metrics = ?, score = ?, bundle_location = ?, manifest_sha256 = ?, worker = ?,
			started_at = ?, finished_at = ?, updated_at = ? WHERE id = ?`,
			r.State, r.Image, r.ImageID, exit, r.OOMKilled, r.TimedOut, r.LogTruncated, r.CancelRequested, r.Reason, metrics, score,
			r.BundleLocation, r.ManifestSHA256, r.Worker, fmtTimePtr(r.StartedAt), fmtTimePtr(r.FinishedAt), fmtTime(r.UpdatedAt), r.ID)
		out = r
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) || fault.IsUser(err) {
			return Run{}, err
		}
		return Run{}, fault.Infraf("store: update run %s: %w", id, err)
	}
	return out, nil
}

// Transition moves a run from one of the states in from to the state to, applying fn
// (may be nil) in the same transaction; ErrConflict when the run is elsewhere.
func (s *Store) Transition(ctx context.Context, id string, from []State, to State, fn func(*Run)) (Run, error) {
	return s.UpdateRun(ctx, id, func(r *Run) error {
		ok := false
		for _, f := range from {
			ok = ok || r.State == f
		}
		if !ok {
			return fmt.Errorf("run %s is %s, not %v: %w", id, r.State, from, ErrConflict)
		}
		r.State = to
		if to.Terminal() && r.FinishedAt == nil {
			now := time.Now().UTC()
			r.FinishedAt = &now
		}
		if fn != nil {
			fn(r)
		}
		return nil
	})
}

// RequestCancel marks a run for cancellation. A queued run is canceled at once; an
// active one is stopped by its worker; a finished one is left as it is.
func (s *Store) RequestCancel(ctx context.Context, teamID, id string) (Run, error) {
	if _, err := s.GetRun(ctx, teamID, id); err != nil {
		return Run{}, err
	}
	return s.UpdateRun(ctx, id, func(r *Run) error {
		if r.State.Terminal() {
			return nil
		}
		r.CancelRequested = true
		if r.State == Queued {
			now := time.Now().UTC()
			r.State, r.FinishedAt, r.Reason = Canceled, &now, "canceled before it started"
		}
		return nil
	})
}

type scanner interface{ Scan(...any) error }

func scanRun(sc scanner) (Run, error) {
	var r Run
	var spec, created, updated string
	var metrics, started, finished, score sql.NullString
	var exit sql.NullInt64
	err := sc.Scan(&r.Seq, &r.ID, &r.TeamID, &r.State, &spec, &r.Image, &r.ImageID, &exit, &r.OOMKilled, &r.TimedOut,
		&r.LogTruncated, &r.CancelRequested, &r.Reason, &metrics, &r.BundleLocation, &r.ManifestSHA256, &r.Worker,
		&created, &started, &finished, &updated, &r.TeamName, &score, &r.Purpose, &r.ParentID, &r.Side, &r.Pair)
	if err != nil {
		return Run{}, err
	}
	if err := json.Unmarshal([]byte(spec), &r.Spec); err != nil {
		return Run{}, fmt.Errorf("run %s: spec: %w", r.ID, err)
	}
	if exit.Valid {
		v := int(exit.Int64)
		r.ExitCode = &v
	}
	if metrics.Valid {
		r.Metrics = json.RawMessage(metrics.String)
	}
	if score.Valid {
		r.Score = json.RawMessage(score.String)
	}
	if r.CreatedAt, err = parseTime(created); err != nil {
		return Run{}, err
	}
	if r.UpdatedAt, err = parseTime(updated); err != nil {
		return Run{}, err
	}
	for _, p := range []struct {
		s   sql.NullString
		dst **time.Time
	}{{started, &r.StartedAt}, {finished, &r.FinishedAt}} {
		if p.s.Valid {
			t, err := parseTime(p.s.String)
			if err != nil {
				return Run{}, err
			}
			*p.dst = &t
		}
	}
	return r, nil
}

// Paths are a run's local files under the data directory while a worker holds it.
type Paths struct {
	Root       string // <data>/runs/<id>
	Submission string // the submitted files, exactly as received
	Workspace  string // the container's /workspace: a fresh copy of Submission, plus out/
	Bundle     string // staging of the bundle: log.txt, result.json, metrics.json, submission/, artifacts/
	Log        string // Bundle/log.txt, written while the run runs
}

// RunPaths names a run's local files.
func RunPaths(dataDir, id string) Paths {
	root := filepath.Join(dataDir, "runs", id)
	bundle := filepath.Join(root, "bundle")
	return Paths{
		Root:       root,
		Submission: filepath.Join(root, "submission"),
		Workspace:  filepath.Join(root, "workspace"),
		Bundle:     bundle,
		Log:        filepath.Join(bundle, "log.txt"),
	}
}
