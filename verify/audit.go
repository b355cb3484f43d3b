package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/fault"
	"github.com/repro/repro/images"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

// Audit outcomes.
const (
	Reproduced = "reproduced"
	Drifted    = "drifted"
)

// SideRerun marks an audit's runs.
const SideRerun = "rerun"

// Defaults of an audit's tolerances.
const (
	// DefaultLossTolerance: about 3 standard deviations of the seed-to-seed spread
	// of a speedrun record's final val loss (σ = 0.0019 over the 80 runs of
	// ../shared/speedrun/golden-ttest.json). A re-run with the same seed should
	// land far closer; GPU kernels are not bit-deterministic.
	DefaultLossTolerance = 0.006
	// DefaultTimeTolerance is relative: |rerun − original| / original.
	DefaultTimeTolerance = 0.10
	// MaxAuditRuns bounds how many runs of a verification an audit re-runs.
	MaxAuditRuns = 20
)

// AuditRequest asks for archived runs to be re-run and compared: one run, or
// the candidate runs of a verification.
type AuditRequest struct {
	TeamID         string
	Admin          bool // the admin may audit any team's runs
	RunID          string
	VerificationID string
	LossTolerance  float64 // absolute, on the final val loss (default 0.006)
	TimeTolerance  float64 // relative, on the train time (default 0.10)
	MaxRuns        int     // of a verification: how many valid candidate runs (default all, at most 20)
}

// AuditOriginal is one archived run an audit re-runs.
type AuditOriginal struct {
	RunID       string        `json:"run_id"`
	Team        string        `json:"team"`
	Spec        store.RunSpec `json:"spec"`
	ImageID     string        `json:"image_id"`
	ValLoss     *float64      `json:"val_loss,omitempty"`
	TrainTimeMs *float64      `json:"train_time_ms,omitempty"`
	State       string        `json:"state"`
	// Status is how the verdict counts the run (ok: it finished with a final val
	// loss and train time, even if it missed the target; failed; error). A
	// re-run is compared by it, so that a loss a hair either side of the target
	// is judged by the loss tolerance, not by the state it gave the run.
	Status         tasks.VerdictRunStatus `json:"status,omitempty"`
	Profile        string                 `json:"profile,omitempty"`
	Bundle         string                 `json:"bundle"`
	ManifestSHA256 string                 `json:"manifest_sha256"`
}

// AuditSpec is an audit's plan, stored with it.
type AuditSpec struct {
	SubjectKind   string          `json:"subject_kind"` // "run" or "verification"
	SubjectID     string          `json:"subject_id"`
	Profile       string          `json:"profile"`
	LossTolerance float64         `json:"loss_tolerance"`
	TimeTolerance float64         `json:"time_tolerance"`
	Originals     []AuditOriginal `json:"originals"`
}

// AuditProgress is what GET shows while an audit runs.
type AuditProgress struct {
	Checked    bool   `json:"checked"` // the archived bundles and images were re-hashed and matched
	Done       int    `json:"done"`
	Total      int    `json:"total"`
	CurrentRun string `json:"current_run,omitempty"`
}

// StartAudit checks a request and starts the audit.
func (s *Service) StartAudit(ctx context.Context, req AuditRequest) (store.Campaign, error) {
	if (req.RunID == "") == (req.VerificationID == "") {
		return store.Campaign{}, inputErr("run", "name either a run or a verification to audit")
	}
	if req.LossTolerance == 0 {
		req.LossTolerance = DefaultLossTolerance
	}
	if req.TimeTolerance == 0 {
		req.TimeTolerance = DefaultTimeTolerance
	}
	if !(req.LossTolerance > 0 && req.LossTolerance < 10) {
		return store.Campaign{}, inputErr("loss_tolerance", "%v: must be in (0, 10)", req.LossTolerance)
	}
	if !(req.TimeTolerance > 0 && req.TimeTolerance <= 10) {
		return store.Campaign{}, inputErr("time_tolerance", "%v: must be in (0, 10] (a fraction of the original time)", req.TimeTolerance)
	}
	if req.MaxRuns < 0 || req.MaxRuns > MaxAuditRuns {
		return store.Campaign{}, inputErr("max_runs", "%d: at most %d", req.MaxRuns, MaxAuditRuns)
	}
	teamID := req.TeamID
	if req.Admin {
		teamID = ""
	}
	spec := AuditSpec{Profile: s.cfg.Profile, LossTolerance: req.LossTolerance, TimeTolerance: req.TimeTolerance}
	var originals []store.Run
	task := ""
	if req.RunID != "" {
		spec.SubjectKind, spec.SubjectID = "run", req.RunID
		if _, err := uuid.Parse(req.RunID); err != nil {
			return store.Campaign{}, inputErr("run", "%q is not a run ID", req.RunID)
		}
		r, err := s.store.GetRun(ctx, teamID, req.RunID)
		if errors.Is(err, store.ErrNotFound) {
			return store.Campaign{}, inputErr("run", "no run %s", req.RunID)
		}
		if err != nil {
			return store.Campaign{}, err
		}
		originals, task = []store.Run{r}, r.Spec.Task
	} else {
		spec.SubjectKind, spec.SubjectID = "verification", req.VerificationID
		if _, err := uuid.Parse(req.VerificationID); err != nil {
			return store.Campaign{}, inputErr("verification", "%q is not a verification ID", req.VerificationID)
		}
		v, err := s.store.GetCampaign(ctx, store.KindVerification, "", req.VerificationID)
		// A verified record is public evidence: anyone may audit it.
		if errors.Is(err, store.ErrNotFound) || (err == nil && teamID != "" && v.TeamID != teamID && v.Outcome != string(tasks.VerdictVerified)) {
			return store.Campaign{}, inputErr("verification", "no verification %s", req.VerificationID)
		}
		if err != nil {
			return store.Campaign{}, err
		}
		if v.State != store.CampaignDone {
			return store.Campaign{}, inputErr("verification", "verification %s is %s: audit it once it has its verdict", v.ID, v.State)
		}
		runs, err := s.store.RunsOf(ctx, v.ID)
		if err != nil {
			return store.Campaign{}, err
		}
		for _, r := range runs {
			if r.Side == SideCandidate && verdictRun(r).Status == tasks.VerdictRunOK {
				originals = append(originals, r)
			}
		}
		if req.MaxRuns > 0 && len(originals) > req.MaxRuns {
			originals = originals[:req.MaxRuns]
		}
		if len(originals) > MaxAuditRuns {
			originals = originals[:MaxAuditRuns]
		}
		if len(originals) == 0 {
			return store.Campaign{}, inputErr("verification", "verification %s has no valid candidate run to re-run", v.ID)
		}
		task = v.Task
	}
	field := "run"
	if spec.SubjectKind == "verification" {
		field = "verification"
	}
	for _, r := range originals {
		o, err := s.original(r, field)
		if err != nil {
			return store.Campaign{}, err
		}
		spec.Originals = append(spec.Originals, o)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return store.Campaign{}, err
	}
	prog, _ := json.Marshal(AuditProgress{Total: len(spec.Originals)})
	c, err := s.store.CreateCampaign(ctx, store.Campaign{
		ID: uuid.NewString(), Kind: store.KindAudit, TeamID: req.TeamID, Task: task, Subject: spec.SubjectID, Spec: b, Progress: prog,
	})
	if err != nil {
		return c, err
	}
	s.log.Info("audit started", "id", c.ID, "subject", spec.SubjectKind+" "+spec.SubjectID, "runs", len(spec.Originals))
	s.launch(c)
	return c, nil
}

// original checks that run r can be audited here and records what its re-run needs.
func (s *Service) original(r store.Run, field string) (AuditOriginal, error) {
	if !r.State.Terminal() || r.BundleLocation == "" {
		return AuditOriginal{}, inputErr(field, "run %s is %s: only archived runs can be audited", r.ID, r.State)
	}
	if r.ImageID == "" {
		return AuditOriginal{}, inputErr(field, "run %s never had an image (it ended %s before it started: %s)", r.ID, r.State, r.Reason)
	}
	o := AuditOriginal{
		RunID: r.ID, Team: r.TeamName, Spec: r.Spec, ImageID: r.ImageID, State: string(r.State), Status: verdictRun(r).Status,
		Bundle: r.BundleLocation, ManifestSHA256: r.ManifestSHA256,
	}
	var m tasks.Metrics
	if r.Metrics != nil && json.Unmarshal(r.Metrics, &m) == nil {
		o.ValLoss, o.TrainTimeMs = m.FinalValLoss, m.TrainTimeMs
	}
	var sc tasks.Score
	if r.Score != nil && json.Unmarshal(r.Score, &sc) == nil {
		o.Profile = sc.Profile
	}
	if o.Profile != "" && s.cfg.Profile != "" && o.Profile != s.cfg.Profile {
		return AuditOriginal{}, inputErr(field, "run %s was timed on hardware profile %s; this service's workers are %s: audit it on a service of that profile",
			r.ID, o.Profile, s.cfg.Profile)
	}
	if r.Spec.Seed == nil {
		return AuditOriginal{}, inputErr(field, "run %s has no recorded seed", r.ID)
	}
	return o, nil
}

// driveAudit carries an audit to its outcome: check the archive, re-run, compare.
func (s *Service) driveAudit(ctx context.Context, id string) error {
	for {
		c, err := s.store.GetCampaign(ctx, store.KindAudit, "", id)
		if err != nil {
			return err
		}
		if c.State.Terminal() {
			return nil
		}
		var spec AuditSpec
		if err := json.Unmarshal(c.Spec, &spec); err != nil {
			return s.failCampaign(ctx, id, "unreadable spec: "+err.Error())
		}
		if c.CancelRequested {
			return s.cancelCampaign(ctx, c)
		}
		var prog AuditProgress
		if c.Progress != nil {
			_ = json.Unmarshal(c.Progress, &prog)
		}
		prog.Total = len(spec.Originals)
		if !prog.Checked {
			refusals, err := s.checkArchive(ctx, c, spec)
			if err != nil {
				return err
			}
			if len(refusals) > 0 {
				rep := newAuditReport(c, spec, nil, s.cfg.Version)
				rep.Outcome, rep.Reasons = Drifted, refusals
				rep.Refused = true
				_, err := s.seal(ctx, c, Drifted, rep, rep.Markdown())
				return err
			}
			prog.Checked = true
			if err := s.setProgress(ctx, id, prog); err != nil {
				return err
			}
		}
		runs, err := s.store.RunsOf(ctx, id)
		if err != nil {
			return err
		}
		st := auditPlan(spec, runs, s.cfg.ErrorRetries)
		prog.Done, prog.CurrentRun = st.done, ""
		if st.wait != nil {
			prog.CurrentRun = st.wait.ID
		}
		if err := s.setProgress(ctx, id, prog); err != nil {
			return err
		}
		switch {
		case st.wait != nil:
			if _, _, err := s.waitRun(ctx, id, st.wait.ID); err != nil {
				return err
			}
		case st.create >= 0:
			o := spec.Originals[st.create]
			rs := o.Spec
			rs.ImageID = o.ImageID
			_, err := s.submit(ctx, c, filepath.Join(s.campaignDir(id), o.RunID), store.Run{
				Purpose: store.PurposeAudit, Side: SideRerun, Pair: st.create + 1, Spec: rs,
			})
			if err != nil {
				return err
			}
		default:
			final := finalRuns(runs)
			for i, o := range spec.Originals {
				if r, ok := final[i+1]; ok && r.State == store.Error {
					return s.failCampaign(ctx, id, fmt.Sprintf("the re-run of run %s ended 'error' %d times (the infrastructure's fault), last: %s",
						o.RunID, s.cfg.ErrorRetries+1, r.Reason))
				}
			}
			rerunManifests := map[string]archive.Manifest{}
			origManifests := map[string]archive.Manifest{}
			for i, o := range spec.Originals {
				b, err := archive.ReadBundle(ctx, s.archive, o.RunID)
				if err != nil {
					return err
				}
				origManifests[o.RunID] = b.Manifest
				if r, ok := final[i+1]; ok && r.BundleLocation != "" {
					rb, err := archive.ReadBundle(ctx, s.archive, r.ID)
					if err != nil {
						return err
					}
					rerunManifests[r.ID] = rb.Manifest
				}
			}
			rep := newAuditReport(c, spec, runs, s.cfg.Version)
			rep.compare(spec, final, origManifests, rerunManifests)
			_, err := s.seal(ctx, c, rep.Outcome, rep, rep.Markdown())
			return err
		}
	}
}

// checkArchive re-hashes every original's bundle and archived image and stages
// its submission; it returns the reasons to refuse a re-run (content that no
// longer matches its record), or an infrastructure error.
func (s *Service) checkArchive(ctx context.Context, c store.Campaign, spec AuditSpec) ([]string, error) {
	var refusals []string
	for _, o := range spec.Originals {
		m, err := archive.VerifyBundle(ctx, s.archive, o.RunID)
		switch {
		case corrupt(err) || errors.Is(err, archive.ErrNotFound):
			refusals = append(refusals, fmt.Sprintf("run %s: its archived bundle no longer matches its manifest, refused to re-run: %v", o.RunID, err))
			continue
		case err != nil:
			return nil, err
		}
		if sum := manifestSHA(ctx, s.archive, o.RunID); o.ManifestSHA256 != "" && sum != "" && sum != o.ManifestSHA256 {
			refusals = append(refusals, fmt.Sprintf("run %s: its archived manifest has sha256 %s, the run recorded %s: refused to re-run", o.RunID, sum, o.ManifestSHA256))
			continue
		}
		if m.Environment.ImageID != "" && m.Environment.ImageID != o.ImageID {
			refusals = append(refusals, fmt.Sprintf("run %s: its manifest names image %s, the run recorded %s", o.RunID, m.Environment.ImageID, o.ImageID))
			continue
		}
		if _, err := images.VerifyArchived(ctx, s.archive, o.ImageID); err != nil {
			switch {
			case corrupt(err):
				refusals = append(refusals, fmt.Sprintf("run %s: its archived image no longer matches its record, refused to re-run: %v", o.RunID, err))
				continue
			case errors.Is(err, archive.ErrNotFound):
				refusals = append(refusals, fmt.Sprintf("run %s: its image %s was never archived, so it cannot be re-run as it was", o.RunID, o.ImageID))
				continue
			default:
				return nil, err
			}
		}
		dir := filepath.Join(s.campaignDir(c.ID), o.RunID)
		if err := os.RemoveAll(dir); err != nil {
			return nil, fault.Infraf("audit %s: %w", c.ID, err)
		}
		if _, err := s.fetchSubmission(ctx, o.RunID, dir); err != nil {
			if corrupt(err) {
				refusals = append(refusals, fmt.Sprintf("run %s: %v", o.RunID, err))
				continue
			}
			return nil, err
		}
	}
	return refusals, nil
}

// manifestSHA is the sha256 of run id's archived manifest.json ("" when unreadable).
func manifestSHA(ctx context.Context, st archive.Store, id string) string {
	b, err := archive.ReadBundle(ctx, st, id)
	if err != nil {
		return ""
	}
	return b.ManifestSHA256
}

type auditStep struct {
	wait   *store.Run
	create int // index of the original to re-run, -1: none
	done   int // originals whose re-run has ended for good
}

// auditPlan: the originals are re-run one at a time, in order; a re-run that
// ended "error" is tried again up to retries times.
func auditPlan(spec AuditSpec, runs []store.Run, retries int) auditStep {
	byPair := map[int][]store.Run{}
	for _, r := range runs {
		byPair[r.Pair] = append(byPair[r.Pair], r)
	}
	st := auditStep{create: -1}
	for i := range spec.Originals {
		tries := byPair[i+1]
		if len(tries) == 0 {
			st.create = i
			return st
		}
		last := tries[len(tries)-1]
		if !last.State.Terminal() {
			st.wait = &last
			return st
		}
		if retryable(last) && len(tries) <= retries {
			st.create = i
			return st
		}
		st.done++
	}
	return st
}

// finalRuns maps each pair to its last run.
func finalRuns(runs []store.Run) map[int]store.Run {
	out := map[int]store.Run{}
	for _, r := range runs {
		out[r.Pair] = r
	}
	return out
}

// Comparison is one compared quantity of an audit.
type Comparison struct {
	RunID     string   `json:"run_id"` // the original
	RerunID   string   `json:"rerun_id,omitempty"`
	What      string   `json:"what"` // "state", "final val loss", "train time", "mean train time"
	Original  *float64 `json:"original,omitempty"`
	Rerun     *float64 `json:"rerun,omitempty"`
	Delta     *float64 `json:"delta,omitempty"`     // rerun − original (relative for times)
	Tolerance *float64 `json:"tolerance,omitempty"` // absolute for losses, relative for times
	Detail    string   `json:"detail,omitempty"`
	OK        bool     `json:"ok"`
}

// FingerprintDiff is one field of the environment fingerprint that differs
// between an original run and its re-run.
type FingerprintDiff struct {
	RunID    string `json:"run_id"`
	Field    string `json:"field"`
	Original string `json:"original"`
	Rerun    string `json:"rerun"`
	// Significant differences make the re-run a different experiment (image,
	// script, data, seed, GPU model) and the audit "drifted"; the others (host,
	// driver, CUDA, repro version, GPU UUIDs) are expected over months and listed.
	Significant bool `json:"significant"`
}

// AuditReport is the archived outcome of an audit.
type AuditReport struct {
	Audit         string            `json:"audit"`
	Team          string            `json:"team"`
	SubjectKind   string            `json:"subject_kind"`
	SubjectID     string            `json:"subject_id"`
	Profile       string            `json:"profile"`
	Outcome       string            `json:"outcome"` // reproduced or drifted
	Refused       bool              `json:"refused,omitempty"`
	Reasons       []string          `json:"reasons"`
	LossTolerance float64           `json:"loss_tolerance"`
	TimeTolerance float64           `json:"time_tolerance"`
	Originals     []AuditOriginal   `json:"originals"`
	Reruns        []ReportRun       `json:"reruns"`
	Comparisons   []Comparison      `json:"comparisons"`
	Fingerprint   []FingerprintDiff `json:"fingerprint_differences"`
	CreatedAt     time.Time         `json:"created_at"`
	DecidedAt     time.Time         `json:"decided_at"`
	ReproVersion  string            `json:"repro_version,omitempty"`
}

func newAuditReport(c store.Campaign, spec AuditSpec, runs []store.Run, version string) AuditReport {
	rep := AuditReport{
		Audit: c.ID, Team: c.TeamName, SubjectKind: spec.SubjectKind, SubjectID: spec.SubjectID, Profile: spec.Profile,
		LossTolerance: spec.LossTolerance, TimeTolerance: spec.TimeTolerance, Originals: spec.Originals,
		Reasons: []string{}, Reruns: []ReportRun{}, Comparisons: []Comparison{}, Fingerprint: []FingerprintDiff{},
		CreatedAt: c.CreatedAt, DecidedAt: time.Now().UTC(), ReproVersion: version,
	}
	for _, r := range runs {
		rep.Reruns = append(rep.Reruns, reportRun(r))
	}
	return rep
}

func fptr(v float64) *float64 { return &v }

// compare fills in the comparisons, the fingerprint differences and the outcome.
func (rep *AuditReport) compare(spec AuditSpec, final map[int]store.Run, orig, rerun map[string]archive.Manifest) {
	var drift []string
	var origTimes, rerunTimes []float64
	for i, o := range spec.Originals {
		r, ok := final[i+1]
		if !ok {
			drift = append(drift, fmt.Sprintf("run %s was not re-run", o.RunID))
			continue
		}
		rr := reportRun(r)
		okState, detail := sameEnd(o, r)
		rep.Comparisons = append(rep.Comparisons, Comparison{RunID: o.RunID, RerunID: r.ID, What: "state",
			Detail: detail, OK: okState})
		if !okState {
			drift = append(drift, fmt.Sprintf("run %s ended %s; its re-run %s ended %s (%s)", o.RunID, o.State, r.ID, r.State, r.Reason))
		}
		switch {
		case o.ValLoss != nil && rr.ValLoss != nil:
			d := *rr.ValLoss - *o.ValLoss
			okLoss := math.Abs(d) <= spec.LossTolerance
			rep.Comparisons = append(rep.Comparisons, Comparison{RunID: o.RunID, RerunID: r.ID, What: "final val loss",
				Original: o.ValLoss, Rerun: rr.ValLoss, Delta: fptr(d), Tolerance: fptr(spec.LossTolerance), OK: okLoss})
			if !okLoss {
				drift = append(drift, fmt.Sprintf("run %s: final val loss %.4f, re-run %.4f: |Δ| %.4f > tolerance %.4f",
					o.RunID, *o.ValLoss, *rr.ValLoss, math.Abs(d), spec.LossTolerance))
			}
		case o.ValLoss != nil:
			rep.Comparisons = append(rep.Comparisons, Comparison{RunID: o.RunID, RerunID: r.ID, What: "final val loss",
				Original: o.ValLoss, Detail: "the re-run reported no final val loss"})
			drift = append(drift, fmt.Sprintf("run %s: its re-run %s reported no final val loss", o.RunID, r.ID))
		}
		if o.TrainTimeMs != nil && rr.TrainTimeMs != nil && *o.TrainTimeMs > 0 {
			origTimes, rerunTimes = append(origTimes, *o.TrainTimeMs), append(rerunTimes, *rr.TrainTimeMs)
			if len(spec.Originals) == 1 {
				rel := (*rr.TrainTimeMs - *o.TrainTimeMs) / *o.TrainTimeMs
				okTime := math.Abs(rel) <= spec.TimeTolerance
				rep.Comparisons = append(rep.Comparisons, Comparison{RunID: o.RunID, RerunID: r.ID, What: "train time",
					Original: o.TrainTimeMs, Rerun: rr.TrainTimeMs, Delta: fptr(rel), Tolerance: fptr(spec.TimeTolerance), OK: okTime})
				if !okTime {
					drift = append(drift, fmt.Sprintf("run %s: train time %.0f ms, re-run %.0f ms: %+.1f%% is beyond the tolerance of ±%.0f%%",
						o.RunID, *o.TrainTimeMs, *rr.TrainTimeMs, 100*rel, 100*spec.TimeTolerance))
				}
			}
		}
		om, okOrig := orig[o.RunID]
		rm, okRerun := rerun[r.ID]
		switch {
		case !okOrig:
			drift = append(drift, fmt.Sprintf("run %s: its archived manifest could not be read: the environments cannot be compared", o.RunID))
		case !okRerun:
			drift = append(drift, fmt.Sprintf("run %s: its re-run %s has no archived bundle: the environments cannot be compared", o.RunID, r.ID))
		default:
			rep.Fingerprint = append(rep.Fingerprint, fingerprintDiffs(o.RunID, om.Environment, rm.Environment)...)
		}
	}
	if len(spec.Originals) > 1 && len(origTimes) > 0 {
		mo, mr := mean(origTimes), mean(rerunTimes)
		rel := (mr - mo) / mo
		okTime := math.Abs(rel) <= spec.TimeTolerance
		c := Comparison{RunID: spec.SubjectID, What: "mean train time", Original: fptr(mo), Rerun: fptr(mr), Delta: fptr(rel),
			Tolerance: fptr(spec.TimeTolerance), OK: okTime, Detail: fmt.Sprintf("over %d runs", len(origTimes))}
		if len(origTimes) >= 2 {
			if t, err := tasks.PairedTTest(rerunTimes, origTimes, tasks.TTestTwoSided); err == nil {
				c.Detail += fmt.Sprintf("; paired t-test of the difference: p = %s", pValue(t.P))
			}
		}
		rep.Comparisons = append(rep.Comparisons, c)
		if !okTime {
			drift = append(drift, fmt.Sprintf("mean train time %.0f ms, re-runs %.0f ms: %+.1f%% is beyond the tolerance of ±%.0f%%",
				mo, mr, 100*rel, 100*spec.TimeTolerance))
		}
	}
	for _, d := range rep.Fingerprint {
		if d.Significant {
			drift = append(drift, fmt.Sprintf("run %s: %s differs: %s, re-run %s", d.RunID, d.Field, d.Original, d.Rerun))
		}
	}
	if len(drift) > 0 {
		rep.Outcome, rep.Reasons = Drifted, drift
		return
	}
	rep.Outcome = Reproduced
	rep.Reasons = append(rep.Reasons, fmt.Sprintf("%d run(s) re-run with the archived image, files, seed and environment: final val loss within ±%.4f, train time within ±%.0f%%, same image, script, data and seed",
		len(spec.Originals), spec.LossTolerance, 100*spec.TimeTolerance))
	for _, d := range rep.Fingerprint {
		rep.Reasons = append(rep.Reasons, fmt.Sprintf("note: run %s: %s differs (%s, re-run %s)", d.RunID, d.Field, d.Original, d.Rerun))
	}
}

// sameEnd reports whether re-run r ended as original o did, and says how they
// ended. Where o records its verdict status, the statuses are compared: an
// original that missed the target by a hair and a re-run that reached it (or
// the other way round) both finished, and the loss comparison judges them.
// Otherwise (specs written before Status) the states must be equal.
func sameEnd(o AuditOriginal, r store.Run) (bool, string) {
	detail := fmt.Sprintf("%s → %s", o.State, r.State)
	if o.Status == "" {
		return r.State == store.State(o.State), detail
	}
	st := verdictRun(r).Status
	if st != o.Status {
		return false, fmt.Sprintf("%s (%s) → %s (%s)", o.State, o.Status, r.State, st)
	}
	if r.State != store.State(o.State) {
		detail += fmt.Sprintf(" (both %s: finished with a final val loss and train time; the loss comparison decides)", st)
	}
	return true, detail
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// fingerprintDiffs lists the fields of two fingerprints that differ.
func fingerprintDiffs(runID string, a, b archive.Fingerprint) []FingerprintDiff {
	var out []FingerprintDiff
	add := func(field, x, y string, significant bool) {
		if x != y {
			out = append(out, FingerprintDiff{RunID: runID, Field: field, Original: orNone(x), Rerun: orNone(y), Significant: significant})
		}
	}
	add("image_id", a.ImageID, b.ImageID, true)
	add("environment", a.Environment, b.Environment, true)
	add("script_sha256", a.ScriptSHA256, b.ScriptSHA256, true)
	add("dataset_manifest_sha256", a.DatasetManifestSHA256, b.DatasetManifestSHA256, true)
	add("seed", fmt.Sprint(a.Seed), fmt.Sprint(b.Seed), true)
	add("gpu_models", strings.Join(a.GPUModels, ","), strings.Join(b.GPUModels, ","), true)
	add("image_digest", a.ImageDigest, b.ImageDigest, false)
	add("driver_version", a.DriverVersion, b.DriverVersion, false)
	add("cuda_version", a.CUDAVersion, b.CUDAVersion, false)
	if !slices.Equal(a.GPUUUIDs, b.GPUUUIDs) {
		add("gpu_uuids", strings.Join(a.GPUUUIDs, ","), strings.Join(b.GPUUUIDs, ","), false)
	}
	add("host", a.Host, b.Host, false)
	add("repro_version", a.ReproVersion, b.ReproVersion, false)
	return out
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// Markdown renders the audit report for people.
func (rep AuditReport) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Audit %s: %s\n\n", rep.Audit, strings.ToUpper(rep.Outcome))
	fmt.Fprintf(&b, "- Audited: %s %s, on hardware profile %s\n", rep.SubjectKind, rep.SubjectID, rep.Profile)
	fmt.Fprintf(&b, "- Requested by team %s; tolerances: final val loss ±%.4f, train time ±%.0f%%\n", rep.Team, rep.LossTolerance, 100*rep.TimeTolerance)
	fmt.Fprintf(&b, "- Started %s, decided %s, repro %s\n\n", rep.CreatedAt.Format("2006-01-02 15:04:05Z"), rep.DecidedAt.Format("2006-01-02 15:04:05Z"), rep.ReproVersion)
	if rep.Refused {
		b.WriteString("**The archived evidence no longer matches its recorded hashes: nothing was re-run.**\n\n")
	}
	b.WriteString("## Reasons\n\n")
	for _, r := range rep.Reasons {
		fmt.Fprintf(&b, "- %s\n", r)
	}
	if len(rep.Comparisons) > 0 {
		b.WriteString("\n## Comparisons\n\n| original run | re-run | what | original | re-run | Δ | tolerance | ok | detail |\n|---|---|---|---|---|---|---|---|---|\n")
		for _, c := range rep.Comparisons {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %v | %s |\n", c.RunID, c.RerunID, c.What,
				floatCell(c.Original, "%.4g"), floatCell(c.Rerun, "%.4g"), floatCell(c.Delta, "%+.4g"), floatCell(c.Tolerance, "%.4g"), c.OK,
				strings.ReplaceAll(c.Detail, "|", "\\|"))
		}
	}
	b.WriteString("\n## Fingerprint differences\n\n")
	if len(rep.Fingerprint) == 0 {
		b.WriteString("None.\n")
	}
	for _, d := range rep.Fingerprint {
		sig := "listed"
		if d.Significant {
			sig = "significant"
		}
		fmt.Fprintf(&b, "- run %s: %s: %s → %s (%s)\n", d.RunID, d.Field, d.Original, d.Rerun, sig)
	}
	b.WriteString("\n## Original runs\n\n")
	for _, o := range rep.Originals {
		seed := "none"
		if o.Spec.Seed != nil {
			seed = fmt.Sprint(*o.Spec.Seed)
		}
		fmt.Fprintf(&b, "- %s (team %s, seed %s, image %s): %s, bundle %s (manifest sha256 %s)\n", o.RunID, o.Team, seed, o.ImageID, o.State, o.Bundle, o.ManifestSHA256)
	}
	if len(rep.Reruns) > 0 {
		b.WriteString("\n## Re-runs\n\n")
		for _, r := range rep.Reruns {
			fmt.Fprintf(&b, "- %s (of original #%d, seed %d): %s, bundle %s\n", r.RunID, r.Pair, r.Seed, stateCell(r.State, r.Reason), r.Bundle)
		}
	}
	return b.String()
}
