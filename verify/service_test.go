package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/images"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

// Tests that drive whole campaigns through a real store and a Local archive,
// with a fake worker that plays the runs.

type env struct {
	dataDir string
	st      *store.Store
	ar      *archive.Local
	team    store.Team
	log     *slog.Logger
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dataDir := t.TempDir()
	st, err := store.Open(ctx, store.Options{DataDir: dataDir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close(context.Background()) })
	ar, err := archive.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	team, err := st.CreateTeam(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	return &env{dataDir: dataDir, st: st, ar: ar, team: team, log: log}
}

// start runs a Service until the test ends (or stop is called).
func (e *env) start(t *testing.T) (svc *Service, stop func()) {
	t.Helper()
	svc = New(Config{DataDir: e.dataDir, Profile: "8xH100", Version: "test", Poll: 5 * time.Millisecond}, e.st, e.ar, e.log)
	ctx, cancel := context.WithCancel(context.Background())
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); svc.Wait() }) }
	t.Cleanup(stop)
	return svc, stop
}

// worker plays queued runs: play returns how a run ends (nil: leave it queued).
func (e *env) worker(t *testing.T, play func(r store.Run) func(*store.Run)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			runs, _, err := e.st.ListRuns(ctx, store.ListFilter{State: store.Queued, Limit: 100})
			if err != nil && ctx.Err() == nil {
				t.Errorf("worker: %v", err)
				return
			}
			slices.Reverse(runs) // oldest first
			for _, r := range runs {
				end := play(r)
				if end == nil {
					continue
				}
				_, err := e.st.UpdateRun(ctx, r.ID, func(x *store.Run) error {
					if x.State != store.Queued {
						return nil
					}
					end(x)
					if x.State.Terminal() {
						now := time.Now().UTC()
						x.StartedAt, x.FinishedAt = &now, &now
					}
					return nil
				})
				if err != nil && ctx.Err() == nil {
					t.Errorf("worker: %v", err)
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// waitCampaign waits until campaign id has ended.
func (e *env) waitCampaign(t *testing.T, id string) store.Campaign {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := e.st.GetCampaign(context.Background(), "", "", id)
		if err != nil {
			t.Fatal(err)
		}
		if c.State.Terminal() {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("campaign %s still %s (%s), progress %s", id, c.State, c.Reason, c.Progress)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func succeed(loss, ms float64) func(*store.Run) {
	return func(r *store.Run) {
		r.State, r.ExitCode, r.Worker, r.Metrics = store.Succeeded, intp(0), "node-1", metricsJSON(loss, ms)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newVerification stores a verification whose two sides' files are staged, as
// StartVerification leaves it (without a task catalogue).
func (e *env) newVerification(t *testing.T, svc *Service, runs int) store.Campaign {
	t.Helper()
	spec := verifSpec(runs)
	spec.TimeoutSeconds, spec.GPUs = 600, 8
	spec.Candidate = SideSpec{Source: "files", Environment: "torch", Command: []string{"python", "cand.py"}}
	spec.Baseline = SideSpec{Source: "task", Record: 3, Environment: "torch", Command: []string{"python", "base.py"}}
	c := store.Campaign{ID: uuid.NewString(), Kind: store.KindVerification, TeamID: e.team.ID, Task: "t1"}
	writeFile(t, filepath.Join(svc.campaignDir(c.ID), SideCandidate, "cand.py"), "candidate")
	writeFile(t, filepath.Join(svc.campaignDir(c.ID), SideBaseline, "base.py"), "baseline")
	var err error
	if c.Spec, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if c, err = e.st.CreateCampaign(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestServiceVerification(t *testing.T) {
	e := newEnv(t)
	svc, stop := e.start(t)
	c := e.newVerification(t, svc, 5)

	var mu sync.Mutex
	tries := map[slot]int{}
	e.worker(t, func(r store.Run) func(*store.Run) {
		mu.Lock()
		defer mu.Unlock()
		s := slot{r.Pair, r.Side}
		tries[s]++
		script, want := "cand.py", "candidate"
		if r.Side == SideBaseline {
			script, want = "base.py", "baseline"
		}
		if b, err := os.ReadFile(filepath.Join(store.RunPaths(e.dataDir, r.ID).Submission, script)); err != nil || string(b) != want {
			t.Errorf("run %s (%v): staged %s = %q, %v", r.ID, s, script, b, err)
		}
		if s == base(2) && tries[s] == 1 {
			return func(r *store.Run) { r.State, r.Reason = store.Error, "docker daemon gone" }
		}
		if r.Side == SideCandidate {
			return succeed(fastLoss[r.Pair-1], fastMs[r.Pair-1])
		}
		return succeed(baseLoss[r.Pair-1], baseMs[r.Pair-1])
	})
	// The campaign was created before Start: launch it as a resumed one.
	svc.launch(c)
	got := e.waitCampaign(t, c.ID)
	if got.State != store.CampaignDone || got.Outcome != string(tasks.VerdictVerified) || got.FinishedAt == nil || got.Reason != "" {
		t.Fatalf("campaign = %+v (report %s)", got, got.Report)
	}

	runs, err := e.st.RunsOf(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, r := range runs {
		order = append(order, slot{r.Pair, r.Side}.String())
		if r.Purpose != store.PurposeVerification || r.TeamID != e.team.ID || !r.Spec.ExclusiveNode || r.Spec.Seed == nil ||
			r.Spec.Task != "t1" || r.Spec.GPUs != 8 || r.Spec.TimeoutSeconds != 600 || r.Spec.Environment != "torch" {
			t.Errorf("run %+v", r)
		}
	}
	want := "candidate 1, baseline 1, candidate 2, baseline 2, baseline 2, candidate 3, baseline 3, candidate 4, baseline 4, candidate 5, baseline 5"
	if strings.Join(order, ", ") != want {
		t.Errorf("runs:\n%s\nwant\n%s", strings.Join(order, ", "), want)
	}
	if *runs[3].Spec.Seed != *runs[4].Spec.Seed {
		t.Errorf("the retry of baseline 2 has seed %d, the first try %d", *runs[4].Spec.Seed, *runs[3].Spec.Seed)
	}

	var rep VerificationReport
	if err := json.Unmarshal(got.Report, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Verdict.Verdict != tasks.VerdictVerified || len(rep.RunList) != 11 || rep.Team != "alpha" || rep.Verdict.Pairs != 5 || len(rep.Verdict.Errored) != 1 {
		t.Errorf("report = %+v", rep)
	}
	for _, name := range []string{"report.json", "report.md"} {
		rc, _, err := e.ar.Get(context.Background(), ReportKey(store.KindVerification, c.ID, name))
		if err != nil {
			t.Fatalf("%s not archived: %v", name, err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if name == "report.json" && !bytes.Equal(b, got.Report) {
			t.Errorf("archived report differs from the stored one")
		}
		if name == "report.md" && !strings.Contains(string(b), "VERIFIED") {
			t.Errorf("report.md:\n%s", b)
		}
	}
	if got.ReportLocation != e.ar.Location(ReportKey(store.KindVerification, c.ID, "")) {
		t.Errorf("report location %q", got.ReportLocation)
	}
	var prog VerificationProgress
	if err := json.Unmarshal(got.Progress, &prog); err != nil || prog.Total != 10 {
		t.Errorf("progress %s: %v", got.Progress, err)
	}
	stop() // the campaign's goroutine cleans up after it records the end
	if _, err := os.Stat(svc.campaignDir(c.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("campaign files left behind: %v", err)
	}
	// A second seal of other content is refused: the verdict stays as archived.
	if _, err := svc.seal(context.Background(), got, "rejected", map[string]string{"x": "y"}, "x"); !errors.Is(err, archive.ErrSealed) {
		t.Errorf("re-seal = %v, want ErrSealed", err)
	}
}

// TestServiceVerificationResumes stops the service between runs: a new one
// picks the campaign up where it was, without repeating a run.
func TestServiceVerificationResumes(t *testing.T) {
	e := newEnv(t)
	svc, stop := e.start(t)
	c := e.newVerification(t, svc, 2)
	svc.launch(c)
	// Wait for the first run, then stop the service while it is queued.
	deadline := time.Now().Add(10 * time.Second)
	for {
		runs, _ := e.st.RunsOf(context.Background(), c.ID)
		if len(runs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no first run")
		}
		time.Sleep(2 * time.Millisecond)
	}
	stop()
	e.worker(t, func(r store.Run) func(*store.Run) {
		if r.Side == SideCandidate {
			return succeed(fastLoss[r.Pair-1], fastMs[r.Pair-1])
		}
		return succeed(baseLoss[r.Pair-1], baseMs[r.Pair-1])
	})
	e.start(t) // resumes the unfinished campaign
	got := e.waitCampaign(t, c.ID)
	runs, _ := e.st.RunsOf(context.Background(), c.ID)
	if got.State != store.CampaignDone || len(runs) != 4 {
		t.Fatalf("campaign %s %s with %d runs, want done with 4", got.State, got.Outcome, len(runs))
	}
	// Two runs a side are too few for the default 5: inconclusive, and said so.
	if got.Outcome != string(tasks.VerdictInconclusive) || !strings.Contains(string(got.Report), "fewer than the 5 required") {
		t.Errorf("outcome %s, report %s", got.Outcome, got.Report)
	}
}

func TestServiceVerificationCancel(t *testing.T) {
	e := newEnv(t)
	svc, stop := e.start(t)
	c := e.newVerification(t, svc, 3)
	started := make(chan string, 10)
	e.worker(t, func(r store.Run) func(*store.Run) {
		started <- r.ID
		return func(r *store.Run) { r.State = store.Running } // never ends by itself
	})
	svc.launch(c)
	var id string
	select {
	case id = <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no run started")
	}
	if _, err := svc.Cancel(context.Background(), store.KindAudit, "", c.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Cancel of another kind: %v", err)
	}
	if _, err := svc.Cancel(context.Background(), store.KindVerification, e.team.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	got := e.waitCampaign(t, c.ID)
	if got.State != store.CampaignCanceled || got.Outcome != "" || got.FinishedAt == nil {
		t.Fatalf("campaign = %+v", got)
	}
	r, err := e.st.GetRun(context.Background(), "", id)
	if err != nil || !r.CancelRequested {
		t.Errorf("its running run was not asked to cancel: %+v %v", r, err)
	}
	if runs, _ := e.st.RunsOf(context.Background(), c.ID); len(runs) != 1 {
		t.Errorf("%d runs after a cancel, want 1", len(runs))
	}
	stop()
	if _, err := os.Stat(svc.campaignDir(c.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("campaign files left behind: %v", err)
	}
	// Canceling a finished campaign leaves it as it is.
	again, err := svc.Cancel(context.Background(), store.KindVerification, "", c.ID)
	if err != nil || again.State != store.CampaignCanceled || !again.FinishedAt.Equal(*got.FinishedAt) {
		t.Errorf("second cancel: %+v %v", again, err)
	}
}

// archiveImage writes an archived image's object and record, as images.Save would.
func archiveImage(t *testing.T, ar archive.Store, imageID string) {
	t.Helper()
	obj := []byte("pretend zstd of docker save")
	objKey, recKey, err := images.ArchiveKeys(imageID)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(obj)
	rec, _ := json.Marshal(images.ArchivedImage{ImageID: imageID, Key: objKey, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(obj)), Compression: "zstd"})
	for k, b := range map[string][]byte{objKey: obj, recKey: rec} {
		if _, err := ar.Put(context.Background(), k, bytes.NewReader(b), int64(len(b)), ""); err != nil {
			t.Fatal(err)
		}
	}
}

var auditImage = "sha256:" + strings.Repeat("5e", 32)

// archivedRun stores a finished, archived run of the team, as a worker leaves it.
func (e *env) archivedRun(t *testing.T, loss, ms float64) store.Run {
	t.Helper()
	ctx := context.Background()
	seed := int64(1234)
	r, err := e.st.CreateRun(ctx, store.Run{ID: uuid.NewString(), TeamID: e.team.ID,
		Spec: store.RunSpec{Environment: "torch", Command: []string{"python", "train.py"}, TimeoutSeconds: 600, Seed: &seed, Task: "t1"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "submission", "train.py"), "print('train')")
	writeFile(t, filepath.Join(dir, "log.txt"), "step:10/10 val_loss:3.2790 train_time:1000ms")
	fpr := baseFP
	fpr.ImageID, fpr.Seed = auditImage, seed
	b, err := archive.UploadBundle(ctx, e.ar, r.ID, dir, fpr)
	if err != nil {
		t.Fatal(err)
	}
	score, _ := json.Marshal(tasks.Score{Task: "t1", Profile: "8xH100", Valid: true})
	r, err = e.st.Transition(ctx, r.ID, []store.State{store.Queued}, store.Succeeded, func(r *store.Run) {
		r.ExitCode, r.ImageID, r.Metrics, r.Score, r.Worker = intp(0), auditImage, metricsJSON(loss, ms), score, "node-1"
		r.BundleLocation, r.ManifestSHA256 = b.Location, b.ManifestSHA256
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestServiceAudit(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		damage  func(t *testing.T, e *env, orig store.Run)
		loss    float64 // of the re-run
		outcome string
		refused bool
		reason  string
	}{
		{name: "reproduced", loss: 3.2800, outcome: Reproduced, reason: "note: run"},
		{name: "loss drifted", loss: 3.3000, outcome: Drifted, reason: "final val loss 3.2790, re-run 3.3000"},
		{name: "tampered submission", outcome: Drifted, refused: true, reason: "no longer matches its manifest", damage: func(t *testing.T, e *env, o store.Run) {
			if _, err := e.ar.Put(ctx, archive.BundleKey(o.ID, "submission/train.py"), strings.NewReader("print('evil')"), -1, ""); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "image never archived", outcome: Drifted, refused: true, reason: "was never archived", damage: func(t *testing.T, e *env, o store.Run) {
			_, rec, _ := images.ArchiveKeys(auditImage)
			if err := os.Remove(filepath.Join(e.ar.Dir(), filepath.FromSlash(rec))); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "image tampered", outcome: Drifted, refused: true, reason: "archived image no longer matches", damage: func(t *testing.T, e *env, o store.Run) {
			obj, _, _ := images.ArchiveKeys(auditImage)
			if _, err := e.ar.Put(ctx, obj, strings.NewReader("other"), -1, ""); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			archiveImage(t, e.ar, auditImage)
			orig := e.archivedRun(t, 3.2790, 1000)
			if tt.damage != nil {
				tt.damage(t, e, orig)
			}
			rerunDir := t.TempDir() // what the re-run leaves to archive
			writeFile(t, filepath.Join(rerunDir, "submission", "train.py"), "print('train')")
			e.worker(t, func(r store.Run) func(*store.Run) {
				if r.Side != SideRerun || r.Spec.ImageID != auditImage || *r.Spec.Seed != 1234 || r.Purpose != store.PurposeAudit {
					t.Errorf("re-run = %+v", r)
				}
				sub := store.RunPaths(e.dataDir, r.ID).Submission
				if b, err := os.ReadFile(filepath.Join(sub, "train.py")); err != nil || string(b) != "print('train')" {
					t.Errorf("re-run's staged train.py = %q, %v", b, err)
				}
				fpr := baseFP
				fpr.ImageID, fpr.Seed, fpr.Host = auditImage, 1234, "node-2"
				b, err := archive.UploadBundle(ctx, e.ar, r.ID, rerunDir, fpr)
				if err != nil {
					t.Error(err)
				}
				return func(r *store.Run) {
					succeed(tt.loss, 1020)(r)
					r.ImageID, r.BundleLocation, r.ManifestSHA256 = auditImage, b.Location, b.ManifestSHA256
				}
			})
			svc, _ := e.start(t)
			if _, err := svc.StartAudit(ctx, AuditRequest{TeamID: e.team.ID, RunID: "not-a-uuid"}); err == nil {
				t.Error("a bad run ID was accepted")
			}
			c, err := svc.StartAudit(ctx, AuditRequest{TeamID: e.team.ID, RunID: orig.ID})
			if err != nil {
				t.Fatal(err)
			}
			got := e.waitCampaign(t, c.ID)
			if got.State != store.CampaignDone || got.Outcome != tt.outcome {
				t.Fatalf("campaign %s %s (%s), report %s", got.State, got.Outcome, got.Reason, got.Report)
			}
			var rep AuditReport
			if err := json.Unmarshal(got.Report, &rep); err != nil {
				t.Fatal(err)
			}
			if rep.Refused != tt.refused || !strings.Contains(strings.Join(rep.Reasons, "\n"), tt.reason) {
				t.Errorf("refused %v, reasons %q; want refused %v and %q", rep.Refused, rep.Reasons, tt.refused, tt.reason)
			}
			runs, _ := e.st.RunsOf(ctx, c.ID)
			if wantRuns := map[bool]int{true: 0, false: 1}[tt.refused]; len(runs) != wantRuns {
				t.Errorf("%d re-runs, want %d", len(runs), wantRuns)
			}
			if len(rep.Originals) != 1 || rep.Originals[0].Status != tasks.VerdictRunOK || rep.Originals[0].ManifestSHA256 != orig.ManifestSHA256 {
				t.Errorf("originals = %+v", rep.Originals)
			}
			if _, _, err := e.ar.Get(ctx, ReportKey(store.KindAudit, c.ID, "report.md")); err != nil {
				t.Errorf("report.md not archived: %v", err)
			}
		})
	}
}

// TestServiceAuditRerunErrors: a re-run the infrastructure keeps failing is
// tried ErrorRetries+1 times with its seed; the audit then ends "error", with
// no outcome (the infrastructure, not the record, is at fault).
func TestServiceAuditRerunErrors(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	archiveImage(t, e.ar, auditImage)
	orig := e.archivedRun(t, 3.2790, 1000)
	e.worker(t, func(r store.Run) func(*store.Run) {
		return func(r *store.Run) { r.State, r.Reason = store.Error, "GPU lost" }
	})
	svc, stop := e.start(t)
	c, err := svc.StartAudit(ctx, AuditRequest{TeamID: e.team.ID, RunID: orig.ID})
	if err != nil {
		t.Fatal(err)
	}
	got := e.waitCampaign(t, c.ID)
	stop() // the campaign's goroutine cleans up after it records the end
	if got.State != store.CampaignError || got.Outcome != "" || got.Report != nil || !strings.Contains(got.Reason, "GPU lost") || !strings.Contains(got.Reason, "3 times") {
		t.Fatalf("campaign %s %q (%s)", got.State, got.Outcome, got.Reason)
	}
	runs, _ := e.st.RunsOf(ctx, c.ID)
	if len(runs) != 3 {
		t.Fatalf("%d re-runs, want 3", len(runs))
	}
	for _, r := range runs {
		if *r.Spec.Seed != 1234 || r.Pair != 1 {
			t.Errorf("re-run %+v", r)
		}
	}
	var prog AuditProgress
	if err := json.Unmarshal(got.Progress, &prog); err != nil || !prog.Checked || prog.Total != 1 {
		t.Errorf("progress %s: %v", got.Progress, err)
	}
	if _, err := os.Stat(svc.campaignDir(c.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the staged files of a failed audit were left behind: %v", err)
	}
}
