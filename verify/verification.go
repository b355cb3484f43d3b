package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/uuid"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/fault"
	"github.com/repro/repro/sandbox/gpu"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

// Sides of a verification.
const (
	SideCandidate = "candidate"
	SideBaseline  = "baseline"
)

// Defaults and bounds of a verification.
const (
	DefaultRuns = 10
	MaxRuns     = 100
)

// VerificationRequest asks for a record claim to be verified.
type VerificationRequest struct {
	TeamID string
	Task   string
	// Runs of each side (default 10).
	Runs int
	// Profile must be this service's hardware profile ("" means it).
	Profile string
	// The candidate: files staged in CandidateDir (moved into the campaign), or
	// the archived submission of the team's run CandidateRun.
	CandidateDir string
	CandidateRun string
	// The baseline: the archived submission of BaselineRun, else the task's start
	// record (the previous record).
	BaselineRun string
	// MaxFailedFraction of the candidate's runs may fail before it is rejected
	// (default 0: any failure rejects, as the speedrun's maintainers do).
	MaxFailedFraction float64
}

// SideSpec says what one side of a verification runs.
type SideSpec struct {
	Source      string         `json:"source"` // "files", "run" or "task"
	RunID       string         `json:"run_id,omitempty"`
	Record      int            `json:"record,omitempty"` // "task": the record whose script it is
	Environment string         `json:"environment"`
	Command     []string       `json:"command"`
	Files       []archive.File `json:"files"` // the submitted files, with sha256
}

// VerificationSpec is a verification's plan, stored with it.
type VerificationSpec struct {
	Task           string               `json:"task"`
	Profile        string               `json:"profile"`
	Runs           int                  `json:"runs"`
	TimeoutSeconds int                  `json:"timeout_seconds"`
	GPUs           int                  `json:"gpus"`
	GPUModel       string               `json:"gpu_model,omitempty"`
	Options        tasks.VerdictOptions `json:"options"`
	Candidate      SideSpec             `json:"candidate"`
	Baseline       SideSpec             `json:"baseline"`
}

// VerificationProgress is what GET shows while a verification runs.
type VerificationProgress struct {
	Done       int     `json:"done"`  // runs ended
	Total      int     `json:"total"` // runs planned (2 × runs, retries not counted)
	CurrentRun string  `json:"current_run,omitempty"`
	LossP      float64 `json:"loss_p_value,omitempty"` // the loss test's p over the candidate's runs so far
	Verdict    string  `json:"verdict_so_far,omitempty"`
}

// StartVerification checks a request, stages both sides' files and starts the
// verification. Errors naming a field are *InputError (the caller's fault).
func (s *Service) StartVerification(ctx context.Context, req VerificationRequest) (store.Campaign, error) {
	if s.cfg.Tasks == nil {
		return store.Campaign{}, inputErr("task", "this service has no task catalogue")
	}
	t, err := s.cfg.Tasks.Task(req.Task)
	if err != nil {
		return store.Campaign{}, inputErr("task", "%q is not a task (see GET /v1/tasks)", req.Task)
	}
	if req.Runs == 0 {
		req.Runs = DefaultRuns
	}
	if req.Runs < 2 || req.Runs > MaxRuns {
		return store.Campaign{}, inputErr("runs", "%d: between 2 and %d runs of each side (a t-test needs 2 at least)", req.Runs, MaxRuns)
	}
	if s.cfg.Profile == "" {
		return store.Campaign{}, inputErr("profile", "this service's workers have no hardware profile (start them with --hardware-profile)")
	}
	if req.Profile != "" && req.Profile != s.cfg.Profile {
		return store.Campaign{}, inputErr("profile", "%q: this service's workers are %s; verify on a service of that profile", req.Profile, s.cfg.Profile)
	}
	if (req.CandidateDir == "") == (req.CandidateRun == "") {
		return store.Campaign{}, inputErr("candidate_run", "give either the candidate's files or candidate_run, not both or neither")
	}
	if !(req.MaxFailedFraction >= 0 && req.MaxFailedFraction < 1) {
		return store.Campaign{}, inputErr("max_failed_fraction", "%v: must be in [0, 1)", req.MaxFailedFraction)
	}
	spec := VerificationSpec{
		Task: t.ID, Profile: s.cfg.Profile, Runs: req.Runs,
		TimeoutSeconds: int(t.TimeLimit().Seconds()), GPUs: t.HardwareProfile().GPUs, GPUModel: t.HardwareProfile().GPUModel,
		Options: tasks.VerdictOptions{TargetLoss: t.TargetValLoss, MaxFailedFraction: req.MaxFailedFraction},
	}
	if s.cfg.GPUCheck != nil {
		if err := s.cfg.GPUCheck(gpu.Request{Count: spec.GPUs, GPUModel: spec.GPUModel, ExclusiveNode: true}); err != nil {
			return store.Campaign{}, inputErr("task", "task %s runs on %s: %v", t.ID, t.Profile, err)
		}
	}
	if _, err := spec.Options.Defaults(); err != nil {
		return store.Campaign{}, inputErr("task", "%v", err)
	}
	c := store.Campaign{ID: uuid.NewString(), Kind: store.KindVerification, TeamID: req.TeamID, Task: t.ID}
	dir := s.campaignDir(c.ID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return c, fault.Infraf("verification: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	cand := filepath.Join(dir, SideCandidate)
	if req.CandidateDir != "" {
		if err := os.Rename(req.CandidateDir, cand); err != nil {
			return c, fault.Infraf("verification: stage the candidate: %w", err)
		}
		spec.Candidate = SideSpec{Source: "files", Environment: t.Environment, Command: t.Command}
	} else if spec.Candidate, err = s.stageRun(ctx, req.TeamID, "candidate_run", req.CandidateRun, cand); err != nil {
		return c, err
	}
	base := filepath.Join(dir, SideBaseline)
	if req.BaselineRun != "" {
		if spec.Baseline, err = s.stageRun(ctx, req.TeamID, "baseline_run", req.BaselineRun, base); err != nil {
			return c, err
		}
	} else {
		script, err := tasks.ReadStored(s.cfg.TaskStore, t.Start().Script)
		if err != nil {
			return c, fault.Infraf("verification: task %s's start script is not synced on this service (run 'repro tasks sync'): %w", t.ID, err)
		}
		if err := os.MkdirAll(base, 0o755); err != nil {
			return c, fault.Infraf("verification: %w", err)
		}
		if err := os.WriteFile(filepath.Join(base, t.ScriptName), script, 0o644); err != nil {
			return c, fault.Infraf("verification: %w", err)
		}
		spec.Baseline = SideSpec{Source: "task", Record: t.StartRecord, Environment: t.Environment, Command: t.Command}
	}
	for _, side := range []struct {
		dir string
		s   *SideSpec
	}{{cand, &spec.Candidate}, {base, &spec.Baseline}} {
		if side.s.Files, err = hashDir(side.dir); err != nil {
			return c, fault.Infraf("verification: %w", err)
		}
	}
	if c.Spec, err = json.Marshal(spec); err != nil {
		return c, err
	}
	if c.Progress, err = json.Marshal(VerificationProgress{Total: 2 * spec.Runs}); err != nil {
		return c, err
	}
	if c, err = s.store.CreateCampaign(ctx, c); err != nil {
		return c, err
	}
	ok = true
	s.log.Info("verification started", "id", c.ID, "task", t.ID, "runs", req.Runs, "candidate", spec.Candidate.Source, "baseline", spec.Baseline.Source)
	s.launch(c)
	return c, nil
}

// stageRun stages the archived submission of run id (visible to team) in dir.
func (s *Service) stageRun(ctx context.Context, teamID, field, id, dir string) (SideSpec, error) {
	if _, err := uuid.Parse(id); err != nil {
		return SideSpec{}, inputErr(field, "%q is not a run ID", id)
	}
	r, err := s.store.GetRun(ctx, teamID, id)
	if errors.Is(err, store.ErrNotFound) {
		return SideSpec{}, inputErr(field, "no run %s", id)
	}
	if err != nil {
		return SideSpec{}, err
	}
	if r.BundleLocation == "" {
		return SideSpec{}, inputErr(field, "run %s is %s: its files are not archived yet", id, r.State)
	}
	if _, err := s.fetchSubmission(ctx, id, dir); err != nil {
		if corrupt(err) {
			return SideSpec{}, inputErr(field, "run %s's archived files no longer match its manifest: %v", id, err)
		}
		return SideSpec{}, err
	}
	// The files match the manifest; the manifest must be the one the run sealed
	// (a store without object lock lets both be rewritten together).
	if r.ManifestSHA256 != "" {
		b, err := archive.ReadBundle(ctx, s.archive, id)
		if err == nil && b.ManifestSHA256 != r.ManifestSHA256 {
			err = inputErr(field, "run %s's archived manifest has sha256 %s, the run recorded %s", id, b.ManifestSHA256, r.ManifestSHA256)
		}
		if err != nil {
			os.RemoveAll(dir)
			return SideSpec{}, err
		}
	}
	return SideSpec{Source: "run", RunID: id, Environment: r.Spec.Environment, Command: r.Spec.Command}, nil
}

// hashDir lists the files under dir with their sha256, sorted by path.
func hashDir(dir string) ([]archive.File, error) {
	var out []archive.File
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, archive.File{Path: filepath.ToSlash(rel), SHA256: hex.EncodeToString(h.Sum(nil)), Size: n})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, err
}

// slot is one planned run: its pair and side.
type slot struct {
	pair int
	side string
}

// step is what a verification does next.
type step struct {
	wait   *store.Run // a run to wait for
	create *slot      // a run to start
	seed   int64      // its seed (a retry keeps its seed)
	done   bool       // every slot has its final run
}

// plan looks at a verification's runs and says what comes next: the slots go
// A/B/A/B (candidate, then baseline, pair by pair), one run at a time, each with
// a fresh seed unused on its side; a run that ended "error" (the
// infrastructure's fault) is run again with the same seed, up to retries times.
func plan(spec VerificationSpec, runs []store.Run, retries int, seed func(used map[int64]bool) int64) step {
	used := map[string]map[int64]bool{SideCandidate: {}, SideBaseline: {}}
	bySlot := map[slot][]store.Run{}
	for _, r := range runs {
		k := slot{r.Pair, r.Side}
		bySlot[k] = append(bySlot[k], r)
		if used[r.Side] != nil && r.Spec.Seed != nil {
			used[r.Side][*r.Spec.Seed] = true
		}
	}
	for pair := 1; pair <= spec.Runs; pair++ {
		for _, side := range []string{SideCandidate, SideBaseline} {
			k := slot{pair, side}
			tries := bySlot[k]
			if len(tries) == 0 {
				return step{create: &k, seed: seed(used[side])}
			}
			last := tries[len(tries)-1]
			if !last.State.Terminal() {
				return step{wait: &last}
			}
			if retryable(last) && len(tries) <= retries {
				return step{create: &k, seed: *last.Spec.Seed}
			}
		}
	}
	return step{done: true}
}

// retryable: the run ended through no fault of its script.
func retryable(r store.Run) bool {
	return (r.State == store.Error || (r.State == store.Canceled && !r.CancelRequested)) && r.Spec.Seed != nil
}

// driveVerification carries a verification to its verdict.
func (s *Service) driveVerification(ctx context.Context, id string) error {
	for {
		c, err := s.store.GetCampaign(ctx, store.KindVerification, "", id)
		if err != nil {
			return err
		}
		if c.State.Terminal() {
			return nil
		}
		var spec VerificationSpec
		if err := json.Unmarshal(c.Spec, &spec); err != nil {
			return s.failCampaign(ctx, id, "unreadable spec: "+err.Error())
		}
		if c.CancelRequested {
			return s.cancelCampaign(ctx, c)
		}
		runs, err := s.store.RunsOf(ctx, id)
		if err != nil {
			return err
		}
		if err := s.setProgress(ctx, id, verificationProgress(spec, runs, s.cfg.ErrorRetries)); err != nil {
			return err
		}
		st := plan(spec, runs, s.cfg.ErrorRetries, newSeed)
		switch {
		case st.wait != nil:
			if _, _, err := s.waitRun(ctx, id, st.wait.ID); err != nil {
				return err
			}
		case st.create != nil:
			side := spec.Candidate
			if st.create.side == SideBaseline {
				side = spec.Baseline
			}
			seed := st.seed
			_, err := s.submit(ctx, c, filepath.Join(s.campaignDir(id), st.create.side), store.Run{
				Purpose: store.PurposeVerification, Side: st.create.side, Pair: st.create.pair,
				Spec: store.RunSpec{
					Environment: side.Environment, Command: side.Command, TimeoutSeconds: spec.TimeoutSeconds,
					GPUs: spec.GPUs, GPUModel: spec.GPUModel, ExclusiveNode: true, Seed: &seed, Task: spec.Task,
				},
			})
			if err != nil {
				return err
			}
		default:
			v, err := judge(spec, runs)
			if err != nil {
				return s.failCampaign(ctx, id, err.Error())
			}
			rep := newVerificationReport(c, spec, runs, v, s.cfg.Version)
			_, err = s.seal(ctx, c, string(v.Verdict), rep, rep.Markdown())
			return err
		}
	}
}

// verdictRun turns a finished run into what the verdict counts. A run that
// missed the target is still "ok": its loss belongs to the sample.
func verdictRun(r store.Run) tasks.VerdictRun {
	v := tasks.VerdictRun{RunID: r.ID, Pair: r.Pair, Worker: r.Worker}
	if r.Spec.Seed != nil {
		v.Seed = *r.Spec.Seed
	}
	var m tasks.Metrics
	if r.Metrics != nil {
		_ = json.Unmarshal(r.Metrics, &m)
	}
	finished := m.FinalValLoss != nil && m.TrainTimeMs != nil
	switch {
	case r.State == store.Error || r.State == store.Canceled:
		v.Status = tasks.VerdictRunError
	case r.State == store.Succeeded && finished,
		r.State == store.Failed && finished && !r.OOMKilled && !r.TimedOut && r.ExitCode != nil && *r.ExitCode == 0:
		v.Status, v.ValLoss, v.TrainTimeMs = tasks.VerdictRunOK, *m.FinalValLoss, *m.TrainTimeMs
	default:
		v.Status = tasks.VerdictRunFailed
	}
	return v
}

// judge decides the verdict over a verification's runs.
func judge(spec VerificationSpec, runs []store.Run) (tasks.Verdict, error) {
	var cand, base []tasks.VerdictRun
	for _, r := range runs {
		if !r.State.Terminal() {
			continue
		}
		switch r.Side {
		case SideCandidate:
			cand = append(cand, verdictRun(r))
		case SideBaseline:
			base = append(base, verdictRun(r))
		}
	}
	return tasks.DecideVerdict(cand, base, spec.Options)
}

// verificationProgress says how far a verification is: a slot is done when its
// last try has ended and will not be tried again (as plan decides), so that Done
// never goes back when an "error" run is re-run.
func verificationProgress(spec VerificationSpec, runs []store.Run, retries int) VerificationProgress {
	p := VerificationProgress{Total: 2 * spec.Runs}
	final := map[slot]store.Run{}
	tries := map[slot]int{}
	for _, r := range runs {
		k := slot{r.Pair, r.Side}
		final[k] = r // the last try of each slot
		tries[k]++
		if !r.State.Terminal() {
			p.CurrentRun = r.ID
		}
	}
	for k, r := range final {
		if r.State.Terminal() && !(retryable(r) && tries[k] <= retries) {
			p.Done++
		}
	}
	if v, err := judge(spec, runs); err == nil {
		if v.Loss != nil {
			p.LossP = v.Loss.Test.P
		}
		if p.Done > 0 {
			p.Verdict = string(v.Verdict)
		}
	}
	return p
}

// ReportRun is one run of a verification or an audit, as its report names it.
type ReportRun struct {
	RunID          string     `json:"run_id"`
	Side           string     `json:"side"`
	Pair           int        `json:"pair,omitempty"`
	Seed           int64      `json:"seed"`
	State          string     `json:"state"`
	Reason         string     `json:"reason,omitempty"`
	ValLoss        *float64   `json:"val_loss,omitempty"`
	TrainTimeMs    *float64   `json:"train_time_ms,omitempty"`
	Worker         string     `json:"worker,omitempty"`
	ImageID        string     `json:"image_id,omitempty"`
	Bundle         string     `json:"bundle,omitempty"`
	ManifestSHA256 string     `json:"manifest_sha256,omitempty"`
	StartedAt      *time.Time `json:"started_at,omitempty"`
	FinishedAt     *time.Time `json:"finished_at,omitempty"`
}

func reportRun(r store.Run) ReportRun {
	out := ReportRun{
		RunID: r.ID, Side: r.Side, Pair: r.Pair, State: string(r.State), Reason: r.Reason, Worker: r.Worker, ImageID: r.ImageID,
		Bundle: r.BundleLocation, ManifestSHA256: r.ManifestSHA256, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
	}
	if r.Spec.Seed != nil {
		out.Seed = *r.Spec.Seed
	}
	var m tasks.Metrics
	if r.Metrics != nil && json.Unmarshal(r.Metrics, &m) == nil {
		out.ValLoss, out.TrainTimeMs = m.FinalValLoss, m.TrainTimeMs
	}
	return out
}

// VerificationReport is the archived outcome of a verification: the claim, how
// it was run, every run with its bundle, and the verdict with its statistics.
type VerificationReport struct {
	Verification string         `json:"verification"`
	Team         string         `json:"team"`
	Task         string         `json:"task"`
	Profile      string         `json:"profile"`
	TargetLoss   float64        `json:"target_val_loss"`
	Runs         int            `json:"runs_per_side"`
	Candidate    SideSpec       `json:"candidate"`
	Baseline     SideSpec       `json:"baseline"`
	Schedule     string         `json:"schedule"`
	Verdict      tasks.Verdict  `json:"verdict"`
	RunList      []ReportRun    `json:"run_list"`
	CreatedAt    time.Time      `json:"created_at"`
	DecidedAt    time.Time      `json:"decided_at"`
	ReproVersion string         `json:"repro_version,omitempty"`
	Workers      map[string]int `json:"workers"` // runs per worker
}

func newVerificationReport(c store.Campaign, spec VerificationSpec, runs []store.Run, v tasks.Verdict, version string) VerificationReport {
	rep := VerificationReport{
		Verification: c.ID, Team: c.TeamName, Task: spec.Task, Profile: spec.Profile, TargetLoss: spec.Options.TargetLoss,
		Runs: spec.Runs, Candidate: spec.Candidate, Baseline: spec.Baseline,
		Schedule: "interleaved A/B: candidate then baseline, pair by pair, one run at a time on the same worker, each with its own seed; runs that ended 'error' were re-run with the same seed",
		Verdict:  v, CreatedAt: c.CreatedAt, DecidedAt: time.Now().UTC(), ReproVersion: version, Workers: map[string]int{},
	}
	for _, r := range runs {
		rep.RunList = append(rep.RunList, reportRun(r))
		if r.Worker != "" {
			rep.Workers[r.Worker]++
		}
	}
	return rep
}
