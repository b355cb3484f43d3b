package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/fault"
	"github.com/repro/repro/sandbox/gpu"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

// unstarted is a Service that checks and stores campaigns but does not drive
// them (Start was not called).
func (e *env) unstarted(t *testing.T, profile string) *Service {
	t.Helper()
	cat, err := tasks.LoadCatalog()
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{DataDir: e.dataDir, Tasks: cat, TaskStore: t.TempDir(), Profile: profile, Version: "test"}, e.st, e.ar, e.log)
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func bytesReader(s string) *strings.Reader { return strings.NewReader(s) }

func wantInputErr(t *testing.T, err error, field string) {
	t.Helper()
	var ie *InputError
	if !errors.As(err, &ie) || ie.Field != field || !fault.IsUser(err) {
		t.Fatalf("err = %v, want a user *InputError on %q", err, field)
	}
}

func TestStartVerification(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	svc := e.unstarted(t, "8xh100")
	orig := e.archivedRun(t, 3.279, 1000)
	queued, err := e.st.CreateRun(ctx, store.Run{ID: uuid.NewString(), TeamID: e.team.ID, Spec: store.RunSpec{Environment: "torch", Command: []string{"x"}}})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := e.st.CreateTeam(ctx, "other")
	candDir := func() string {
		d := filepath.Join(t.TempDir(), "upload")
		writeFile(t, filepath.Join(d, "train_gpt2.py"), "print('fast')")
		return d
	}

	for _, tt := range []struct {
		name  string
		req   VerificationRequest
		field string
	}{
		{"unknown task", VerificationRequest{Task: "nope", CandidateRun: orig.ID}, "task"},
		{"one run", VerificationRequest{Task: "record-1-to-2", Runs: 1, CandidateRun: orig.ID}, "runs"},
		{"too many runs", VerificationRequest{Task: "record-1-to-2", Runs: MaxRuns + 1, CandidateRun: orig.ID}, "runs"},
		{"other profile", VerificationRequest{Task: "record-1-to-2", Profile: "1xa100", CandidateRun: orig.ID}, "profile"},
		{"no candidate", VerificationRequest{Task: "record-1-to-2"}, "candidate_run"},
		{"two candidates", VerificationRequest{Task: "record-1-to-2", CandidateRun: orig.ID, CandidateDir: candDir()}, "candidate_run"},
		{"failed fraction 1", VerificationRequest{Task: "record-1-to-2", CandidateRun: orig.ID, MaxFailedFraction: 1}, "max_failed_fraction"},
		{"failed fraction negative", VerificationRequest{Task: "record-1-to-2", CandidateRun: orig.ID, MaxFailedFraction: -0.1}, "max_failed_fraction"},
		{"candidate run not a UUID", VerificationRequest{Task: "record-1-to-2", CandidateRun: "abc"}, "candidate_run"},
		{"candidate run unknown", VerificationRequest{Task: "record-1-to-2", CandidateRun: uuid.NewString()}, "candidate_run"},
		{"candidate run of another team", VerificationRequest{TeamID: other.ID, Task: "record-1-to-2", CandidateRun: orig.ID}, "candidate_run"},
		{"candidate run not archived", VerificationRequest{Task: "record-1-to-2", CandidateRun: queued.ID}, "candidate_run"},
		{"baseline run not archived", VerificationRequest{Task: "record-1-to-2", CandidateDir: candDir(), BaselineRun: queued.ID}, "baseline_run"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.req.TeamID == "" {
				tt.req.TeamID = e.team.ID
			}
			_, err := svc.StartVerification(ctx, tt.req)
			wantInputErr(t, err, tt.field)
		})
	}
	if _, err := e.unstarted(t, "").StartVerification(ctx, VerificationRequest{TeamID: e.team.ID, Task: "record-1-to-2", CandidateRun: orig.ID}); err == nil {
		t.Error("a service without a hardware profile started a verification")
	}
	// A task whose GPUs this service's workers lack is refused up front, with the
	// allocator's own words (not 2N runs that each end "error").
	cpuOnly := e.unstarted(t, "8xh100")
	cpuOnly.cfg.GPUCheck = func(r gpu.Request) error {
		return fmt.Errorf("%d GPUs requested; this node has none", r.Count)
	}
	_, err = cpuOnly.StartVerification(ctx, VerificationRequest{TeamID: e.team.ID, Task: "record-1-to-2", CandidateRun: orig.ID})
	wantInputErr(t, err, "task")
	if !strings.Contains(err.Error(), "8 GPUs requested; this node has none") {
		t.Errorf("GPU refusal: %v", err)
	}

	t.Run("files against an archived baseline run", func(t *testing.T) {
		dir := candDir()
		c, err := svc.StartVerification(ctx, VerificationRequest{TeamID: e.team.ID, Task: "record-1-to-2", Runs: 3, CandidateDir: dir, BaselineRun: orig.ID})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the candidate's files were not moved into the campaign: %v", err)
		}
		got, err := e.st.GetCampaign(ctx, store.KindVerification, e.team.ID, c.ID)
		if err != nil || got.State != store.CampaignRunning || got.Task != "record-1-to-2" {
			t.Fatalf("campaign %+v, %v", got, err)
		}
		var spec VerificationSpec
		if err := json.Unmarshal(got.Spec, &spec); err != nil {
			t.Fatal(err)
		}
		if spec.Runs != 3 || spec.Profile != "8xh100" || spec.Options.TargetLoss != 3.28 || spec.TimeoutSeconds != 3600 || spec.GPUs != 8 {
			t.Errorf("spec = %+v", spec)
		}
		wantCand := []archive.File{{Path: "train_gpt2.py", SHA256: sha("print('fast')"), Size: 13}}
		if spec.Candidate.Source != "files" || len(spec.Candidate.Files) != 1 || spec.Candidate.Files[0] != wantCand[0] ||
			spec.Candidate.Environment != "benchmark-torch2.7.1" {
			t.Errorf("candidate = %+v", spec.Candidate)
		}
		if spec.Baseline.Source != "run" || spec.Baseline.RunID != orig.ID || spec.Baseline.Environment != "torch" ||
			len(spec.Baseline.Files) != 1 || spec.Baseline.Files[0].Path != "train.py" || spec.Baseline.Files[0].SHA256 != sha("print('train')") {
			t.Errorf("baseline = %+v", spec.Baseline)
		}
		for side, file := range map[string]string{SideCandidate: "train_gpt2.py", SideBaseline: "train.py"} {
			if _, err := os.Stat(filepath.Join(svc.campaignDir(c.ID), side, file)); err != nil {
				t.Errorf("%s not staged: %v", side, err)
			}
		}
	})

	t.Run("a tampered candidate run is refused", func(t *testing.T) {
		r := e.archivedRun(t, 3.279, 1000)
		if _, err := e.ar.Put(ctx, archive.BundleKey(r.ID, "submission/train.py"), bytesReader("print('evil')"), -1, ""); err != nil {
			t.Fatal(err)
		}
		_, err := svc.StartVerification(ctx, VerificationRequest{TeamID: e.team.ID, Task: "record-1-to-2", CandidateRun: r.ID, BaselineRun: orig.ID})
		wantInputErr(t, err, "candidate_run")
	})

	t.Run("a rewritten bundle is refused", func(t *testing.T) {
		// Files and manifest rewritten together: the files match the new manifest,
		// but the manifest is not the one the run recorded.
		r := e.archivedRun(t, 3.279, 1000)
		m, err := archive.ReadBundle(ctx, e.ar, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		evil := "print('evil')"
		for i, f := range m.Manifest.Files {
			if f.Path == "submission/train.py" {
				m.Manifest.Files[i].SHA256, m.Manifest.Files[i].Size = sha(evil), int64(len(evil))
			}
		}
		b, _ := json.Marshal(m.Manifest)
		if _, err := e.ar.Put(ctx, archive.BundleKey(r.ID, "submission/train.py"), bytesReader(evil), -1, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := e.ar.Put(ctx, archive.BundleKey(r.ID, archive.ManifestName), bytesReader(string(b)), -1, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := archive.VerifyBundle(ctx, e.ar, r.ID); err != nil {
			t.Fatalf("the rewritten bundle is not self-consistent: %v", err)
		}
		_, err = svc.StartVerification(ctx, VerificationRequest{TeamID: e.team.ID, Task: "record-1-to-2", CandidateRun: r.ID, BaselineRun: orig.ID})
		wantInputErr(t, err, "candidate_run")
	})

	t.Run("nothing is left of a refused request", func(t *testing.T) {
		entries, _ := os.ReadDir(filepath.Join(e.dataDir, "campaigns"))
		cs, _, _ := e.st.ListCampaigns(ctx, store.CampaignFilter{Kind: store.KindVerification})
		if len(entries) != len(cs) {
			t.Errorf("%d campaign folders for %d campaigns", len(entries), len(cs))
		}
	})
}

func TestStartAudit(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	svc := e.unstarted(t, "8xH100")
	orig := e.archivedRun(t, 3.279, 1000)
	other, _ := e.st.CreateTeam(ctx, "other")
	mod := func(f func(*store.Run)) store.Run {
		r := e.archivedRun(t, 3.279, 1000)
		r, err := e.st.UpdateRun(ctx, r.ID, func(r *store.Run) error { f(r); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	noImage := mod(func(r *store.Run) { r.ImageID = "" })
	noBundle := mod(func(r *store.Run) { r.BundleLocation = "" })
	elsewhere := mod(func(r *store.Run) { r.Score = json.RawMessage(`{"task":"t1","profile":"1xA100"}`) })
	// finished stores a finished run as given (CreateRun then Transition: UpdateRun does not write the spec or the links).
	finished := func(r store.Run, f func(*store.Run)) store.Run {
		r.ID = uuid.NewString()
		if r.TeamID == "" {
			r.TeamID = e.team.ID
		}
		r.Spec.Environment, r.Spec.Command, r.Spec.Task = "torch", []string{"x"}, "t1"
		c, err := e.st.CreateRun(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		out, err := e.st.Transition(ctx, c.ID, []store.State{store.Queued}, store.Succeeded, func(x *store.Run) {
			x.ExitCode, x.ImageID, x.Metrics, x.BundleLocation, x.ManifestSHA256 = intp(0), auditImage, metricsJSON(3.279, 1000), "file:///x/", "m"
			if f != nil {
				f(x)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	noSeed := finished(store.Run{}, nil)
	running, _ := e.st.CreateRun(ctx, store.Run{ID: uuid.NewString(), TeamID: e.team.ID, Spec: store.RunSpec{Environment: "torch", Command: []string{"x"}}})

	// A verification with three A/B pairs; candidate 2 crashed, so it is no original.
	verif := func(team string, state store.CampaignState, outcome string) store.Campaign {
		c, err := e.st.CreateCampaign(ctx, store.Campaign{ID: uuid.NewString(), Kind: store.KindVerification, TeamID: team, Task: "t1"})
		if err != nil {
			t.Fatal(err)
		}
		for pair := 1; pair <= 3; pair++ {
			for _, side := range []string{SideCandidate, SideBaseline} {
				finished(store.Run{TeamID: team, Purpose: store.PurposeVerification, ParentID: c.ID, Side: side, Pair: pair, Spec: store.RunSpec{Seed: seedp(int64(pair))}},
					func(x *store.Run) {
						if side == SideCandidate && pair == 2 {
							x.State, x.ExitCode = store.Failed, intp(1)
						}
					})
			}
		}
		if state != store.CampaignRunning {
			if _, err := e.st.UpdateCampaign(ctx, c.ID, func(c *store.Campaign) error { c.State, c.Outcome = state, outcome; return nil }); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	verifiedOther := verif(other.ID, store.CampaignDone, string(tasks.VerdictVerified))
	rejectedOther := verif(other.ID, store.CampaignDone, string(tasks.VerdictRejected))
	runningOwn := verif(e.team.ID, store.CampaignRunning, "")

	for _, tt := range []struct {
		name  string
		req   AuditRequest
		field string
	}{
		{"nothing named", AuditRequest{}, "run"},
		{"both named", AuditRequest{RunID: orig.ID, VerificationID: verifiedOther.ID}, "run"},
		{"loss tolerance negative", AuditRequest{RunID: orig.ID, LossTolerance: -1}, "loss_tolerance"},
		{"time tolerance too big", AuditRequest{RunID: orig.ID, TimeTolerance: 11}, "time_tolerance"},
		{"max runs", AuditRequest{VerificationID: verifiedOther.ID, MaxRuns: MaxAuditRuns + 1}, "max_runs"},
		{"run not a UUID", AuditRequest{RunID: "x"}, "run"},
		{"unknown run", AuditRequest{RunID: uuid.NewString()}, "run"},
		{"another team's run", AuditRequest{TeamID: other.ID, RunID: orig.ID}, "run"},
		{"unfinished run", AuditRequest{RunID: running.ID}, "run"},
		{"run without an image", AuditRequest{RunID: noImage.ID}, "run"},
		{"run not archived", AuditRequest{RunID: noBundle.ID}, "run"},
		{"run timed elsewhere", AuditRequest{RunID: elsewhere.ID}, "run"},
		{"run without a seed", AuditRequest{RunID: noSeed.ID}, "run"},
		{"verification not a UUID", AuditRequest{VerificationID: "x"}, "verification"},
		{"unknown verification", AuditRequest{VerificationID: uuid.NewString()}, "verification"},
		{"another team's rejected verification", AuditRequest{VerificationID: rejectedOther.ID}, "verification"},
		{"running verification", AuditRequest{VerificationID: runningOwn.ID}, "verification"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.req.TeamID == "" {
				tt.req.TeamID = e.team.ID
			}
			_, err := svc.StartAudit(ctx, tt.req)
			wantInputErr(t, err, tt.field)
		})
	}

	t.Run("a run", func(t *testing.T) {
		c, err := svc.StartAudit(ctx, AuditRequest{TeamID: e.team.ID, RunID: orig.ID})
		if err != nil {
			t.Fatal(err)
		}
		var spec AuditSpec
		if err := json.Unmarshal(c.Spec, &spec); err != nil {
			t.Fatal(err)
		}
		if c.Subject != orig.ID || c.Task != "t1" || spec.SubjectKind != "run" || spec.LossTolerance != DefaultLossTolerance || spec.TimeTolerance != DefaultTimeTolerance ||
			len(spec.Originals) != 1 || spec.Originals[0].ImageID != auditImage || *spec.Originals[0].ValLoss != 3.279 || spec.Originals[0].Status != tasks.VerdictRunOK ||
			*spec.Originals[0].Spec.Seed != 1234 || spec.Originals[0].Profile != "8xH100" {
			t.Errorf("campaign %+v, spec %+v", c, spec)
		}
	})
	t.Run("the admin audits any team's run", func(t *testing.T) {
		if _, err := svc.StartAudit(ctx, AuditRequest{TeamID: other.ID, Admin: true, RunID: orig.ID}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("another team's verified verification", func(t *testing.T) {
		c, err := svc.StartAudit(ctx, AuditRequest{TeamID: e.team.ID, VerificationID: verifiedOther.ID, MaxRuns: 2, LossTolerance: 0.01})
		if err != nil {
			t.Fatal(err)
		}
		var spec AuditSpec
		if err := json.Unmarshal(c.Spec, &spec); err != nil {
			t.Fatal(err)
		}
		if spec.SubjectKind != "verification" || spec.SubjectID != verifiedOther.ID || len(spec.Originals) != 2 || spec.LossTolerance != 0.01 || c.TeamID != e.team.ID {
			t.Fatalf("spec %+v", spec)
		}
		runs, _ := e.st.RunsOf(ctx, verifiedOther.ID)
		// runs: c1 b1 c2 (failed) b2 c3 b3.
		if spec.Originals[0].RunID != runs[0].ID || spec.Originals[1].RunID != runs[4].ID {
			t.Errorf("originals are not the first valid candidate runs: %+v", spec.Originals)
		}
	})
}
