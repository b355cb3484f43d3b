package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/moby/moby/client"

	"github.com/repro/repro/internal/testenv"
)

// campaignView is the part of a verification or an audit the tests read.
type campaignView struct {
	ID       string `json:"id"`
	Team     string `json:"team"`
	Task     string `json:"task"`
	State    string `json:"state"`
	Verdict  string `json:"verdict"`
	Outcome  string `json:"outcome"`
	Reason   string `json:"reason"`
	Progress *struct {
		Done       int      `json:"done"`
		Total      int      `json:"total"`
		LossPValue *float64 `json:"loss_p_value"`
		Checked    bool     `json:"checked"`
	} `json:"progress"`
	Runs []struct {
		ID          string   `json:"id"`
		Side        string   `json:"side"`
		Pair        int      `json:"pair"`
		Seed        int64    `json:"seed"`
		State       string   `json:"state"`
		ValLoss     *float64 `json:"val_loss"`
		TrainTimeMs *float64 `json:"train_time_ms"`
	} `json:"runs"`
	Report         json.RawMessage `json:"report"`
	ReportLocation string          `json:"report_location"`
	CreatedAt      *time.Time      `json:"created_at"`
	FinishedAt     *time.Time      `json:"finished_at"`
}

func (s *stack) campaign(token, kind, id string) campaignView {
	s.t.Helper()
	code, _, b := s.request("GET", "/v1/"+kind+"/"+id, token, nil, "")
	if code != 200 {
		s.t.Fatalf("GET %s %s: %d %s", kind, id, code, b)
	}
	var v campaignView
	if err := json.Unmarshal(b, &v); err != nil {
		s.t.Fatalf("%s %s: %v: %s", kind, id, err, b)
	}
	return v
}

func (s *stack) waitCampaign(token, kind, id string, timeout time.Duration) campaignView {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v := s.campaign(token, kind, id)
		if v.State != "running" {
			return v
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s %s still running after %s: %+v", kind, id, timeout, v)
		}
		time.Sleep(time.Second)
	}
}

// verdictReport is the part of an archived verification report the tests read.
type verdictReport struct {
	Verification string `json:"verification"`
	Verdict      struct {
		Verdict string   `json:"verdict"`
		Reasons []string `json:"reasons"`
		N       int      `json:"n"`
		Pairs   int      `json:"pairs"`
		Loss    *struct {
			Summary  struct{ Mean float64 } `json:"summary"`
			Test     struct{ P float64 }    `json:"test"`
			PGreater float64                `json:"p_greater"`
		} `json:"loss"`
		CandidateTime *struct {
			Summary struct{ Mean, Low, High float64 } `json:"summary"`
		} `json:"candidate_time"`
		BaselineTime *struct {
			Summary struct{ Mean float64 } `json:"summary"`
		} `json:"baseline_time"`
		SpeedTest string `json:"speed_test"`
		Paired    *struct {
			Ratio float64 `json:"ratio"`
			Test  struct{ P float64 }
		} `json:"paired"`
		Failed []json.RawMessage `json:"failed"`
	} `json:"verdict"`
	RunList []struct {
		RunID          string `json:"run_id"`
		Side           string `json:"side"`
		Bundle         string `json:"bundle"`
		ManifestSHA256 string `json:"manifest_sha256"`
		Worker         string `json:"worker"`
	} `json:"run_list"`
}

// auditReport is the part of an archived audit report the tests read.
type auditReport struct {
	Outcome     string   `json:"outcome"`
	Refused     bool     `json:"refused"`
	Reasons     []string `json:"reasons"`
	Comparisons []struct {
		What     string   `json:"what"`
		Original *float64 `json:"original"`
		Rerun    *float64 `json:"rerun"`
		OK       bool     `json:"ok"`
	} `json:"comparisons"`
	Fingerprint []struct {
		Field       string `json:"field"`
		Significant bool   `json:"significant"`
	} `json:"fingerprint_differences"`
}

// The CI evidence for verification, audit and the leaderboard, on the CPU
// task with real PyTorch: record 2's script verified against record 1's (really
// faster, valid); a candidate cut short rejected with its p-value; an archived run
// audited and reproduced; the same audit refused (drifted) once a file, then the
// image, no longer match their recorded hashes.
func TestVerificationAuditAndLeaderboard(t *testing.T) {
	docker := testenv.Docker(t)
	if _, err := docker.ImageInspect(context.Background(), torchBaseImage); err != nil {
		testenv.Missing(t, "docker", fmt.Sprintf("image %s missing (run scripts/base-torch.sh): %v", torchBaseImage, err))
	}
	s := startStack(t)
	tok := s.team("alpha")
	task := catalogTask(t, cpuTask)
	startScript := cpuTaskFile(t, task.Start().Script)
	targetScript := cpuTaskFile(t, task.Target().Script)

	// 1. Verified: record 2's script, made to stop at val loss 1.88 rather than at the
	// first val loss <= 1.90, through the CLI, 8 runs of each side. (Record 2 as it is
	// stops just under the target: mean 1.8949 ± 0.0045 over 5 runs gave p = 0.032,
	// "inconclusive, about 8 runs would reach p < 0.01" — the speedrun's records are
	// like that too; the real claim needed 80 runs. A claim with a margin is verified
	// with few. 8 pairs, because this shared 2-core machine's speed drifts: 5 pairs
	// once gave a paired p of 0.013 for a 1.44x speedup while other tests ran.)
	candidate := strings.Replace(string(targetScript), "TARGET_VAL_LOSS = 1.90", "TARGET_VAL_LOSS = 1.88", 1)
	if candidate == string(targetScript) {
		t.Fatal("record 2's script has no 'TARGET_VAL_LOSS = 1.90' to tighten")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, task.ScriptName), []byte(candidate), 0o644); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	stdout, stderr, code := s.cli(tok, dir, "verify", "--task", cpuTask, "--runs", "8", task.ScriptName)
	t.Logf("repro verify (%.0f s):\n%s%s", time.Since(began).Seconds(), stderr, stdout)
	if code != 0 || !strings.Contains(stdout, "VERIFIED") {
		t.Fatalf("repro verify exited %d; want 0 and VERIFIED", code)
	}
	if !strings.Contains(stderr, "runs 16/16 done") || !strings.Contains(stderr, "loss p-value") {
		t.Errorf("repro verify printed no progress with runs done and the p-value")
	}
	var verID string
	for _, f := range strings.Fields(stdout) {
		if len(f) == 36 && strings.Count(f, "-") == 4 {
			verID = f
			break
		}
	}
	v := s.campaign(tok, "verifications", verID)
	if v.State != "done" || v.Verdict != "verified" || v.Task != cpuTask || v.Team != "alpha" {
		t.Fatalf("verification: %+v", v)
	}
	var rep verdictReport
	if err := json.Unmarshal(v.Report, &rep); err != nil {
		t.Fatal(err)
	}
	vd := rep.Verdict
	if vd.Loss == nil || vd.Paired == nil || vd.CandidateTime == nil || vd.BaselineTime == nil {
		t.Fatalf("verdict lacks its statistics: %s", v.Report)
	}
	t.Logf("MEASURED verification: loss mean %.4f p=%.3g (target %g), candidate %.0f ms (CI %.0f-%.0f), baseline %.0f ms, paired speedup %.3fx p=%.3g, reasons %q",
		vd.Loss.Summary.Mean, vd.Loss.Test.P, task.TargetValLoss, vd.CandidateTime.Summary.Mean, vd.CandidateTime.Summary.Low, vd.CandidateTime.Summary.High,
		vd.BaselineTime.Summary.Mean, vd.Paired.Ratio, vd.Paired.Test.P, vd.Reasons)
	if !(vd.Loss.Test.P < 0.01) || !(vd.Paired.Test.P < 0.01) || !(vd.Paired.Ratio > 1) || vd.N != 8 || vd.Pairs != 8 || vd.SpeedTest != "paired" {
		t.Errorf("verified without the numbers: loss p %v, speed p %v, ratio %v, n %d, pairs %d, test %s", vd.Loss.Test.P, vd.Paired.Test.P, vd.Paired.Ratio, vd.N, vd.Pairs, vd.SpeedTest)
	}
	// Interleaved A/B on one worker, each run its own seed, each linked and archived.
	if len(v.Runs) != 16 {
		t.Fatalf("%d runs, want 16", len(v.Runs))
	}
	seeds := map[string]map[int64]bool{"candidate": {}, "baseline": {}}
	var runsWall time.Duration
	for i, r := range v.Runs {
		wantSide := []string{"candidate", "baseline"}[i%2]
		if r.Side != wantSide || r.Pair != i/2+1 || r.State != "succeeded" {
			t.Errorf("run %d: side %s pair %d state %s; want %s pair %d succeeded", i, r.Side, r.Pair, r.State, wantSide, i/2+1)
		}
		if seeds[r.Side][r.Seed] {
			t.Errorf("seed %d repeated on the %s side", r.Seed, r.Side)
		}
		seeds[r.Side][r.Seed] = true
		run := s.getTaskRun(tok, r.ID)
		if run.Purpose != "verification" || run.Parent != verID || run.Bundle == nil {
			t.Errorf("run %s: purpose %q parent %q bundle %v", r.ID, run.Purpose, run.Parent, run.Bundle)
		}
		if run.FinishedAt != nil {
			runsWall += run.FinishedAt.Sub(run.CreatedAt)
		}
	}
	// The campaign's own cost: its wall time against the sum of its runs' (each
	// from submission to archived), i.e. against submitting them back to back.
	if v.CreatedAt != nil && v.FinishedAt != nil && runsWall > 0 {
		wall := v.FinishedAt.Sub(*v.CreatedAt)
		t.Logf("MEASURED verification scheduling: campaign %.1f s vs its 16 runs %.1f s back to back: ratio %.3f (%.0f ms per run)",
			wall.Seconds(), runsWall.Seconds(), wall.Seconds()/runsWall.Seconds(), float64((wall-runsWall).Milliseconds())/16)
	}
	workers := map[string]bool{}
	for _, r := range rep.RunList {
		workers[r.Worker] = true
		if r.Bundle == "" || r.ManifestSHA256 == "" {
			t.Errorf("report names run %s without its bundle", r.RunID)
		}
	}
	if len(workers) != 1 {
		t.Errorf("runs on workers %v, want one", workers)
	}
	// The report as archived: sealed in the bucket, served with its sha256.
	code, hdr, body := s.request("GET", "/v1/verifications/"+verID+"/report", tok, nil, "")
	sum := sha256.Sum256(body)
	if code != 200 || hdr.Get("X-Content-SHA256") != hex.EncodeToString(sum[:]) {
		t.Errorf("report: %d, X-Content-SHA256 %q, body sha256 %x", code, hdr.Get("X-Content-SHA256"), sum)
	}
	if got := s.object("verifications/" + verID + "/report.json"); !bytes.Equal(got, body) {
		t.Errorf("the report served differs from the archived object")
	}
	// Sealed evidence: under GOVERNANCE retention (serve's default: 10 years).
	if mode, until, err := s.minio().GetObjectRetention(context.Background(), s.bucket, "verifications/"+verID+"/report.json", ""); err != nil ||
		mode == nil || *mode != minio.Governance || until == nil || until.Before(time.Now().Add(9*365*24*time.Hour)) {
		t.Errorf("the archived report's retention: %v until %v, %v; want GOVERNANCE for years", mode, until, err)
	}
	code, _, md := s.request("GET", "/v1/verifications/"+verID+"/report?format=markdown", tok, nil, "")
	if code != 200 || !strings.Contains(string(md), "VERIFIED") || !strings.Contains(string(md), v.Runs[0].ID) {
		t.Errorf("markdown report: %d\n%s", code, md)
	}
	// Verification runs are not submissions: they stay off the results.
	code, _, b := s.request("GET", "/v1/tasks/"+cpuTask+"/results", tok, nil, "")
	if code != 200 || !strings.Contains(string(b), `"items":[]`) {
		t.Errorf("results after a verification: %d %s", code, b)
	}

	// 2. Rejected: a candidate that stops after 20 steps, far above the target loss.
	broken := strings.Replace(string(startScript), "MAX_STEPS = 1500", "MAX_STEPS = 20", 1)
	spec, _ := json.Marshal(map[string]any{"task": cpuTask, "runs": 3})
	mb, ct := multipartBody(t, string(spec), map[string]string{task.ScriptName: broken})
	code, _, b = s.request("POST", "/v1/verifications", tok, mb, ct)
	if code != 201 {
		t.Fatalf("POST /v1/verifications: %d %s", code, b)
	}
	var created campaignView
	json.Unmarshal(b, &created)
	rej := s.waitCampaign(tok, "verifications", created.ID, 6*time.Minute)
	var rrep verdictReport
	json.Unmarshal(rej.Report, &rrep)
	t.Logf("MEASURED rejected verification: %s, reasons %q", rej.Verdict, rrep.Verdict.Reasons)
	if rej.Verdict != "rejected" || rrep.Verdict.Loss == nil || !(rrep.Verdict.Loss.PGreater < 0.01) {
		t.Fatalf("the cut-short candidate: verdict %q, report %s", rej.Verdict, rej.Report)
	}
	if !strings.Contains(strings.Join(rrep.Verdict.Reasons, "\n"), "p") {
		t.Errorf("the rejection's reasons show no p-value: %q", rrep.Verdict.Reasons)
	}

	// 3. The leaderboard lists the verified record only.
	code, _, b = s.request("GET", "/v1/leaderboard?task="+cpuTask, tok, nil, "")
	var lb struct {
		Records []struct {
			Verification string  `json:"verification"`
			Team         string  `json:"team"`
			MeanTimeMs   float64 `json:"mean_time_ms"`
			LossPValue   float64 `json:"loss_p_value"`
		} `json:"records"`
		Scores []json.RawMessage `json:"scores"`
	}
	if code != 200 || json.Unmarshal(b, &lb) != nil || len(lb.Records) != 1 || lb.Records[0].Verification != verID ||
		lb.Records[0].Team != "alpha" || lb.Records[0].MeanTimeMs != vd.CandidateTime.Summary.Mean || lb.Records[0].LossPValue != vd.Loss.Test.P {
		t.Errorf("leaderboard: %d %s", code, b)
	}
	// Another team sees the verified record (public evidence), not the rejected claim.
	other := s.team("beta")
	if c, _, _ := s.request("GET", "/v1/verifications/"+verID, other, nil, ""); c != 200 {
		t.Errorf("another team GET of a verified record: %d", c)
	}
	if c, _, _ := s.request("GET", "/v1/verifications/"+created.ID, other, nil, ""); c != 404 {
		t.Errorf("another team GET of a rejected claim: %d, want 404", c)
	}

	// 4. Audit of an archived run: reproduced.
	orig := s.submit(tok, map[string]any{"task": cpuTask}, map[string]string{task.ScriptName: string(startScript)})
	origRun := s.waitTaskRun(tok, orig.ID, 6*time.Minute)
	if origRun.State != "succeeded" {
		t.Fatalf("the run to audit: %+v", origRun)
	}
	// Train times on this shared 2-core VM drift up to ~1.5x between minutes (see
	// TestTaskCPUCalibrateAndScore; a re-run measured +63%): the time tolerance is ±100%;
	// the loss one is the default (same seed on CPU: measured identical losses).
	audit := func(want string) (campaignView, auditReport) {
		t.Helper()
		code, _, b := s.request("POST", "/v1/audits", tok, strings.NewReader(fmt.Sprintf(`{"run":%q,"time_tolerance":1.0}`, orig.ID)), "application/json")
		if code != 201 {
			t.Fatalf("POST /v1/audits: %d %s", code, b)
		}
		var a campaignView
		json.Unmarshal(b, &a)
		a = s.waitCampaign(tok, "audits", a.ID, 6*time.Minute)
		var ar auditReport
		json.Unmarshal(a.Report, &ar)
		t.Logf("MEASURED audit %s: %s (%s), reasons %q", a.ID, a.Outcome, a.State, ar.Reasons)
		if a.State != "done" || a.Outcome != want || ar.Outcome != want {
			t.Fatalf("audit: state %s outcome %q, want %s: %s %s", a.State, a.Outcome, want, a.Reason, a.Report)
		}
		return a, ar
	}
	// The host loses the run's image: the audit restores it from the archive.
	if _, err := docker.ImageRemove(context.Background(), origRun.ImageID, client.ImageRemoveOptions{Force: true}); err != nil {
		t.Fatalf("removing the run's image: %v", err)
	}
	a, ar := audit("reproduced")
	if _, err := docker.ImageInspect(context.Background(), origRun.ImageID); err != nil {
		t.Errorf("the archived image was not restored for the re-run: %v", err)
	}
	if len(a.Runs) != 1 || a.Runs[0].Seed != *origRun.Spec.Seed || a.Runs[0].State != "succeeded" {
		t.Fatalf("audit runs: %+v", a.Runs)
	}
	rerun := s.getTaskRun(tok, a.Runs[0].ID)
	if rerun.Purpose != "audit" || rerun.ImageID != origRun.ImageID {
		t.Errorf("re-run: purpose %q image %s; want audit, the original's %s", rerun.Purpose, rerun.ImageID, origRun.ImageID)
	}
	compared := map[string]bool{}
	for _, c := range ar.Comparisons {
		compared[c.What] = c.OK
	}
	if !compared["final val loss"] || !compared["train time"] || !compared["state"] {
		t.Errorf("comparisons: %+v", ar.Comparisons)
	}
	for _, d := range ar.Fingerprint {
		if d.Significant {
			t.Errorf("significant fingerprint difference in a faithful re-run: %+v", d)
		}
	}

	// The run is a valid submission, but this service has no reference times for the
	// task (no calibration here): its FSR of 0 says nothing, so it does not rank.
	code, _, b = s.request("GET", "/v1/leaderboard?task="+cpuTask, tok, nil, "")
	if code != 200 || !strings.Contains(string(b), `"scores":[]`) {
		t.Errorf("leaderboard scores without reference times: %d %s", code, b)
	}

	// 5. A file of the archived bundle rewritten (a new version in the bucket): refused, drifted.
	key := "runs/" + orig.ID + "/submission/" + task.ScriptName
	mc := s.minio()
	put := func(key string, data []byte) {
		t.Helper()
		if _, err := mc.PutObject(context.Background(), s.bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put(key, append(append([]byte{}, startScript...), []byte("\n# tampered\n")...))
	before := len(s.auditRuns(tok))
	_, ar = audit("drifted")
	if !ar.Refused || !strings.Contains(strings.Join(ar.Reasons, "\n"), "submission/"+task.ScriptName) {
		t.Errorf("tampered file: refused %v, reasons %q; want refused, naming the file", ar.Refused, ar.Reasons)
	}
	if after := len(s.auditRuns(tok)); after != before {
		t.Errorf("a refused audit started runs")
	}
	// 6. The file restored, the archived image rewritten: refused, drifted.
	put(key, startScript)
	imgKey := "images/" + strings.TrimPrefix(origRun.ImageID, "sha256:") + ".tar.zst"
	put(imgKey, []byte("not the image"))
	_, ar = audit("drifted")
	if !ar.Refused || !strings.Contains(strings.Join(ar.Reasons, "\n"), "archived image") {
		t.Errorf("tampered image: refused %v, reasons %q", ar.Refused, ar.Reasons)
	}

	// 7. The pages, in real headless Chromium: each renders with its plot.
	checkPages(t, s, tok, cpuTask, verID, v.Runs[0].ID, a.ID)
}

// checkPages screenshots the leaderboard, a verification, one of its runs and an
// audit in headless Chromium and counts the pixels of each plot's data colours
// (service/pages: line series #1f77b4 and #ff7f0e, candidate dots #d62728, baseline
// dots #1f77b4). The public pages are loaded as anyone would; the audit (of a
// private run) through a proxy on 127.0.0.1 that adds the team's bearer token, as
// the login cookie would.
func checkPages(t *testing.T, s *stack, tok, task, verID, runID, auditID string) {
	t.Helper()
	chromium := testenv.Chromium(t)
	// Anonymous: the audit page asks for a login; the API refuses.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(s.url + "/audits/" + auditID)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Errorf("anonymous audit page: %d %s, want a redirect to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	target, _ := url.Parse(s.url)
	proxy := httputil.NewSingleHostReverseProxy(target)
	director := proxy.Director
	proxy.Director = func(r *http.Request) {
		director(r)
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	authed := httptest.NewServer(proxy)
	defer authed.Close()

	blue, orange, red := testenv.HexColor("#1f77b4"), testenv.HexColor("#ff7f0e"), testenv.HexColor("#d62728")
	shots := t.TempDir()
	for _, c := range []struct {
		name, url string
		height    int
		colors    []testenv.RGB
		min       []int
		text      []string
	}{
		{"leaderboard", s.url + "/leaderboard/" + task, 1200, []testenv.RGB{blue}, []int{20}, []string{"alpha", "<svg"}},
		{"verification", s.url + "/verifications/" + verID, 2200, []testenv.RGB{red, blue}, []int{100, 100}, []string{"verified", "<svg", runID}},
		{"run", s.url + "/runs/" + runID, 2000, []testenv.RGB{blue}, []int{300}, []string{"<svg", "manifest.json", "log.txt"}},
		{"audit", authed.URL + "/audits/" + auditID, 1600, []testenv.RGB{blue, orange}, []int{100, 100}, []string{"reproduced", "<svg", "final val loss"}},
		{"index", s.url + "/", 1000, nil, nil, []string{task, verID}},
	} {
		png := filepath.Join(shots, c.name+".png")
		if err := testenv.Screenshot(t, chromium, c.url, png, 1280, c.height); err != nil {
			t.Errorf("%s page: %v", c.name, err)
			continue
		}
		if dir := os.Getenv("REPRO_SCREENSHOT_DIR"); dir != "" {
			if b, err := os.ReadFile(png); err == nil {
				os.MkdirAll(dir, 0o755)
				os.WriteFile(filepath.Join(dir, "e2e-"+c.name+".png"), b, 0o644)
			}
		}
		img, err := testenv.DecodePNG(png)
		if err != nil {
			t.Errorf("%s page: %v", c.name, err)
			continue
		}
		near, nonWhite := testenv.PixelStats(img, c.colors)
		t.Logf("MEASURED %s page (%s): plot-colour pixels %v, non-white %d", c.name, png, near, nonWhite)
		if nonWhite < 20000 {
			t.Errorf("%s page looks blank: %d non-white pixels", c.name, nonWhite)
		}
		for i, n := range near {
			if n < c.min[i] {
				t.Errorf("%s page: %d pixels of its plot colour %d, want >= %d (the plot did not render)", c.name, n, i, c.min[i])
			}
		}
		dom, err := testenv.DumpDOM(t, chromium, c.url)
		if err != nil {
			t.Errorf("%s page DOM: %v", c.name, err)
			continue
		}
		for _, want := range c.text {
			if !strings.Contains(dom, want) {
				t.Errorf("%s page: the rendered DOM lacks %q", c.name, want)
			}
		}
	}
}

// auditRuns lists the team's audit runs (purpose audit).
func (s *stack) auditRuns(token string) []string {
	s.t.Helper()
	code, _, b := s.request("GET", "/v1/runs?limit=200", token, nil, "")
	if code != 200 {
		s.t.Fatalf("list runs: %d %s", code, b)
	}
	var list struct{ Items []taskRunView }
	json.Unmarshal(b, &list)
	var ids []string
	for _, r := range list.Items {
		if r.Purpose == "audit" {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

// A verification survives `repro serve` being killed mid-run: on restart the run
// in flight is re-attached and finished, the campaign resumes where it was, and
// the plan comes out whole — every slot run once, A/B order kept, no seed reused.
func TestVerificationSurvivesServeKill(t *testing.T) {
	docker := testenv.Docker(t)
	if _, err := docker.ImageInspect(context.Background(), torchBaseImage); err != nil {
		testenv.Missing(t, "docker", fmt.Sprintf("image %s missing (run scripts/base-torch.sh): %v", torchBaseImage, err))
	}
	s := startStack(t)
	tok := s.team("kilo")
	task := catalogTask(t, cpuTask)
	script := cpuTaskFile(t, task.Target().Script)
	spec, _ := json.Marshal(map[string]any{"task": cpuTask, "runs": 2})
	mb, ct := multipartBody(t, string(spec), map[string]string{task.ScriptName: string(script)})
	code, _, b := s.request("POST", "/v1/verifications", tok, mb, ct)
	if code != 201 {
		t.Fatalf("POST /v1/verifications: %d %s", code, b)
	}
	var v campaignView
	json.Unmarshal(b, &v)
	// Kill serve while the second run (the first baseline) is running.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		cur := s.campaign(tok, "verifications", v.ID)
		if len(cur.Runs) == 2 && cur.Runs[1].State == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second run never ran: %+v", cur)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.kill()
	s.start()
	v = s.waitCampaign(tok, "verifications", v.ID, 5*time.Minute)
	if v.State != "done" || v.Verdict == "" || len(v.Runs) != 4 {
		t.Fatalf("after the restart: state %s verdict %q, %d runs: %+v", v.State, v.Verdict, len(v.Runs), v.Runs)
	}
	seeds := map[string]map[int64]bool{"candidate": {}, "baseline": {}}
	for i, r := range v.Runs {
		want := []string{"candidate", "baseline"}[i%2]
		if r.Side != want || r.Pair != i/2+1 || r.State != "succeeded" || seeds[r.Side][r.Seed] {
			t.Errorf("run %d: %s pair %d %s seed %d; want %s pair %d succeeded, a fresh seed", i, r.Side, r.Pair, r.State, r.Seed, want, i/2+1)
		}
		seeds[r.Side][r.Seed] = true
	}
	// Two runs of each side are too few for a verdict either way: inconclusive, saying so.
	if v.Verdict != "inconclusive" {
		t.Errorf("verdict %q over 2 runs a side, want inconclusive", v.Verdict)
	}
}
