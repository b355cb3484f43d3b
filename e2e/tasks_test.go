package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/repro/repro/internal/testenv"
	"github.com/repro/repro/tasks"
)

// torchBaseImage is the local base of the cpu-torch environment (scripts/base-torch.sh);
// the worker builds cpu-torch from it on first use.
const torchBaseImage = "repro-base/debian-torch:bookworm"

const cpuTask = "cpu-tiny-1"

// taskRunView is a task run as the API shows it: runView with its score.
type taskRunView struct {
	ID     string `json:"id"`
	Team   string `json:"team"`
	State  string `json:"state"`
	Reason string `json:"reason"`
	Spec   struct {
		Task        *string  `json:"task"`
		Environment *string  `json:"environment"`
		Command     []string `json:"command"`
		Seed        *int64   `json:"seed"`
	} `json:"spec"`
	Metrics *struct {
		FinalValLoss *float64 `json:"final_val_loss"`
		TrainTimeMs  *float64 `json:"train_time_ms"`
		Steps        *int     `json:"steps"`
	} `json:"metrics"`
	Score *struct {
		Task         string   `json:"task"`
		Profile      string   `json:"profile"`
		Valid        bool     `json:"valid"`
		Reason       *string  `json:"reason"`
		FSR          float64  `json:"fsr"`
		NoiseFloor   *float64 `json:"noise_floor"`
		TStartMs     *float64 `json:"t_start_ms"`
		TTargetMs    *float64 `json:"t_target_ms"`
		TrainTimeMs  *float64 `json:"train_time_ms"`
		FinalValLoss *float64 `json:"final_val_loss"`
	} `json:"score"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	Purpose    string     `json:"purpose"`
	Parent     string     `json:"parent"`
	Side       string     `json:"side"`
	Pair       int        `json:"pair"`
	Worker     string     `json:"worker"`
	ImageID    string     `json:"image_id"`
	Bundle     *struct {
		Location       string `json:"location"`
		ManifestSHA256 string `json:"manifest_sha256"`
	} `json:"bundle"`
}

func (s *stack) getTaskRun(token, id string) taskRunView {
	s.t.Helper()
	code, _, b := s.request("GET", "/v1/runs/"+id, token, nil, "")
	if code != 200 {
		s.t.Fatalf("get run %s: %d %s", id, code, b)
	}
	var r taskRunView
	if err := json.Unmarshal(b, &r); err != nil {
		s.t.Fatalf("run %s: %v: %s", id, err, b)
	}
	return r
}

// waitTaskRun polls a run once a second (as the CLI does: timed runs share the
// machine with the test) until it has ended.
func (s *stack) waitTaskRun(token, id string, timeout time.Duration) taskRunView {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := s.getTaskRun(token, id)
		switch r.State {
		case "succeeded", "failed", "error", "canceled":
			return r
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("run %s has not ended within %s: %+v", id, timeout, r)
		}
		time.Sleep(time.Second)
	}
}

// apiTask is the part of GET /v1/tasks the tests read.
type apiTask struct {
	ID          string   `json:"id"`
	Environment string   `json:"environment"`
	Profile     string   `json:"profile"`
	Command     []string `json:"command"`
	TStartMs    *float64 `json:"t_start_ms"`
	TTargetMs   *float64 `json:"t_target_ms"`
}

func (s *stack) listTasks(token string) []apiTask {
	s.t.Helper()
	code, _, b := s.request("GET", "/v1/tasks", token, nil, "")
	if code != 200 {
		s.t.Fatalf("GET /v1/tasks: %d %s", code, b)
	}
	var list struct{ Items []apiTask }
	if err := json.Unmarshal(b, &list); err != nil {
		s.t.Fatalf("GET /v1/tasks: %v: %s", err, b)
	}
	return list.Items
}

// cpuTaskFile returns a built-in file of the CPU task suite (tasks/cpu), checked
// against its catalogue pin.
func cpuTaskFile(t *testing.T, f tasks.File) []byte {
	t.Helper()
	if f.Repo != tasks.BuiltinRepo {
		t.Fatalf("%s is not a built-in file", f)
	}
	b, err := os.ReadFile(filepath.Join("..", "tasks", filepath.FromSlash(f.Path)))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != f.SHA256 {
		t.Fatalf("%s: sha256 %x differs from its catalogue pin %s", f, sum, f.SHA256)
	}
	return b
}

func catalogTask(t *testing.T, id string) *tasks.Task {
	t.Helper()
	cat, err := tasks.LoadCatalog()
	if err != nil {
		t.Fatal(err)
	}
	task, err := cat.Task(id)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// The catalogue over the API: every task listed, a bundle with exactly the start
// script, the chosen hints and task.json; a task run that names its own
// environment, command, limit or task variables is refused, naming the field.
func TestTaskCatalogBundleAndOverrides(t *testing.T) {
	s := startStack(t)
	tok := s.team("bundlers")
	task := catalogTask(t, cpuTask)

	items := s.listTasks(tok)
	if len(items) != 20 {
		t.Errorf("GET /v1/tasks lists %d tasks, want 20 (19 speedrun + %s)", len(items), cpuTask)
	}
	var found *apiTask
	for i := range items {
		if items[i].ID == cpuTask {
			found = &items[i]
		}
	}
	if found == nil {
		t.Fatalf("GET /v1/tasks lacks %s: %+v", cpuTask, items)
	}
	if found.Environment != "cpu-torch" || found.Profile != "cpu-2core" || !slices.Equal(found.Command, []string{"python3", "train_gpt2.py"}) {
		t.Errorf("%s as listed: %+v", cpuTask, *found)
	}
	if found.TStartMs != nil {
		t.Errorf("%s has reference times before any calibration: %v", cpuTask, *found.TStartMs)
	}

	code, hdr, b := s.request("GET", "/v1/tasks/"+cpuTask+"/bundle?hints=1,2", tok, nil, "")
	if code != 200 {
		t.Fatalf("bundle: %d %s", code, b)
	}
	if ct := hdr.Get("Content-Type"); !strings.Contains(ct, "tar") {
		t.Errorf("bundle Content-Type %q", ct)
	}
	want := map[string]tasks.File{
		task.ScriptName: task.Start().Script,
		"hints/" + filepath.Base(task.Start().Hints[1].Path): task.Start().Hints[1],
		"hints/" + filepath.Base(task.Start().Hints[2].Path): task.Start().Hints[2],
	}
	got := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("bundle is not a tar: %v", err)
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := got[h.Name]; dup {
			t.Errorf("bundle holds %s twice", h.Name)
		}
		got[h.Name] = content
	}
	names := make([]string, 0, len(got))
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	wantNames := []string{task.ScriptName, tasks.BundleTaskFile}
	for n := range want {
		if n != task.ScriptName {
			wantNames = append(wantNames, n)
		}
	}
	sort.Strings(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Fatalf("bundle files %v, want exactly %v", names, wantNames)
	}
	for name, f := range want {
		sum := sha256.Sum256(got[name])
		if hex.EncodeToString(sum[:]) != f.SHA256 || int64(len(got[name])) != f.Bytes {
			t.Errorf("bundle %s: sha256 %x (%d bytes), catalogue pin %s (%d bytes)", name, sum, len(got[name]), f.SHA256, f.Bytes)
		}
	}
	var info tasks.BundleInfo
	if err := json.Unmarshal(got[tasks.BundleTaskFile], &info); err != nil {
		t.Fatalf("task.json: %v", err)
	}
	if info.Task != cpuTask || !slices.Equal(info.Hints, []int{1, 2}) || info.TargetValLoss != task.TargetValLoss || len(info.Files) != 3 {
		t.Errorf("task.json: %+v", info)
	}
	if strings.Contains(string(got[tasks.BundleTaskFile]), task.Target().Script.SHA256) {
		t.Errorf("task.json gives the target script away")
	}

	// A task run is the task's run: what the task sets cannot be overridden.
	script := map[string]string{task.ScriptName: string(cpuTaskFile(t, task.Start().Script))}
	for _, c := range []struct {
		spec  map[string]any
		field string
	}{
		{map[string]any{"task": cpuTask, "environment": "bb"}, "spec.environment"},
		{map[string]any{"task": cpuTask, "command": []string{"python3", "-c", "print('step:1/1 val_loss:1.0 train_time:1ms step_avg:1ms')"}}, "spec.command"},
		{map[string]any{"task": cpuTask, "timeout_seconds": 3600}, "spec.timeout_seconds"},
		{map[string]any{"task": cpuTask, "env": map[string]string{"NANOGPT_VAL_TOKENS": "16"}}, "spec.env.NANOGPT_VAL_TOKENS"},
	} {
		js, _ := json.Marshal(c.spec)
		body, ct := multipartBody(t, string(js), script)
		code, _, b := s.request("POST", "/v1/runs", tok, body, ct)
		var p struct {
			Field  string `json:"field"`
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(b, &p)
		if code != 422 || p.Field != c.field {
			t.Errorf("task run with %s: %d %s, want 422 naming %s", js, code, b, c.field)
		} else if !strings.Contains(p.Reason, cpuTask) {
			t.Errorf("task run with %s: reason %q does not name the task", js, p.Reason)
		}
	}
	code, _, b = s.request("GET", "/v1/runs", tok, nil, "")
	if code != 200 || !strings.Contains(string(b), `"items":[]`) {
		t.Errorf("refused task runs left runs behind: %d %s", code, b)
	}
}

// The CPU task for real: calibrate cpu-tiny-1 on this worker with the CLI (K runs of
// record 1 and of record 2 in the cpu-torch image), then score the target record's
// script (FSR near 1), the start script (FSR near 0) and a copy that stops too early
// (invalid, FSR 0), and list the team's results.
func TestTaskCPUCalibrateAndScore(t *testing.T) {
	docker := testenv.Docker(t)
	if _, err := docker.ImageInspect(context.Background(), torchBaseImage); err != nil {
		testenv.Missing(t, "docker", fmt.Sprintf("image %s missing (run scripts/base-torch.sh): %v", torchBaseImage, err))
	}
	// K=3 runs of each script: about 100 s on the 2-core development machine.
	k := 3
	if os.Getenv("REPRO_E2E_CALIBRATE_RUNS") != "" {
		fmt.Sscan(os.Getenv("REPRO_E2E_CALIBRATE_RUNS"), &k)
	}
	s := startStack(t)
	tok := s.team("cpu")
	task := catalogTask(t, cpuTask)
	startScript := cpuTaskFile(t, task.Start().Script)
	targetScript := cpuTaskFile(t, task.Target().Script)

	// Calibrate through the CLI, as an operator would.
	began := time.Now()
	cmd := exec.Command(reproBin, "tasks", "calibrate", cpuTask, "--runs", fmt.Sprint(k), "--data-dir", s.dataDir)
	cmd.Env = append(os.Environ(), "REPRO_URL="+s.url, "REPRO_TOKEN="+tok)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("repro tasks calibrate %s --runs %d (%.0f s):\n%s%s", cpuTask, k, time.Since(began).Seconds(), stderr.String(), stdout.String())
	if err != nil {
		t.Fatalf("calibrate: %v", err)
	}
	progress := 0
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.HasPrefix(line, fmt.Sprintf("calibrate %s: run %d/%d (", cpuTask, progress+1, 2*k)) {
			progress++
		}
	}
	if progress != 2*k {
		t.Errorf("calibrate printed %d progress lines in order, want %d", progress, 2*k)
	}
	refsDir := filepath.Join(s.dataDir, "refs")
	refs, err := tasks.LoadRefs(refsDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 1 {
		t.Fatalf("calibration wrote references for profiles %v, want the worker's one", refs)
	}
	var profile string
	for p := range refs {
		profile = p
	}
	ref, ok := refs.Get(profile, cpuTask)
	if !ok {
		t.Fatalf("no reference for %s on %s: %v", cpuTask, profile, refs)
	}
	if len(ref.StartRunsMs) != k || len(ref.TargetRunsMs) != k || !(ref.StartMs > ref.TargetMs) || ref.NoiseFloor <= 0 {
		t.Fatalf("reference: %+v", ref)
	}
	gap := ref.StartMs - ref.TargetMs
	t.Logf("MEASURED on %s: start %.0f ± %.0f ms %v, target %.0f ± %.0f ms %v, gap %.0f ms, noise floor %.4f (start std/gap %.4f, target std/gap %.4f)",
		profile, ref.StartMs, ref.StartStdMs, ref.StartRunsMs, ref.TargetMs, ref.TargetStdMs, ref.TargetRunsMs, gap, ref.NoiseFloor,
		ref.StartStdMs/gap, ref.TargetStdMs/gap)
	if !strings.Contains(stdout.String(), fmt.Sprintf("noise floor %.4f", ref.NoiseFloor)) {
		t.Errorf("calibrate's summary does not state the noise floor %.4f", ref.NoiseFloor)
	}
	// The calibration runs were task runs, timed on the worker's profile.
	code, _, b := s.request("GET", "/v1/runs?limit=50", tok, nil, "")
	if code != 200 {
		t.Fatalf("list runs: %d %s", code, b)
	}
	var calRuns struct{ Items []taskRunView }
	if err := json.Unmarshal(b, &calRuns); err != nil {
		t.Fatal(err)
	}
	if len(calRuns.Items) != 2*k {
		t.Fatalf("%d runs after calibration, want %d", len(calRuns.Items), 2*k)
	}
	seeds := map[int64]bool{}
	for _, r := range calRuns.Items {
		if r.State != "succeeded" || r.Spec.Task == nil || *r.Spec.Task != cpuTask || r.Spec.Environment == nil || *r.Spec.Environment != "cpu-torch" || r.Purpose != "calibration" ||
			r.Score == nil || r.Score.Profile != profile || r.Spec.Seed == nil {
			t.Errorf("calibration run: %+v", r)
			continue
		}
		seeds[*r.Spec.Seed] = true
	}
	if len(seeds) != 2*k {
		t.Errorf("calibration runs had %d distinct seeds, want %d", len(seeds), 2*k)
	}
	if profile == task.Profile {
		for _, it := range s.listTasks(tok) {
			if it.ID == cpuTask && (it.TStartMs == nil || *it.TStartMs != ref.StartMs || it.TTargetMs == nil || *it.TTargetMs != ref.TargetMs) {
				t.Errorf("GET /v1/tasks after calibration: %s has t_start %v, t_target %v; want %v, %v", cpuTask, it.TStartMs, it.TTargetMs, ref.StartMs, ref.TargetMs)
			}
		}
	}

	// Scored runs: the target record's script and the start script, three of each
	// interleaved, judged by their median FSR (on this shared 2-core machine a single
	// run is now and then twice as slow when other work lands on its core); then a
	// copy of the start script that stops after 20 steps, far above the target val loss.
	broken := strings.Replace(string(startScript), "MAX_STEPS = 1500", "MAX_STEPS = 20", 1)
	if broken == string(startScript) {
		t.Fatal("the start script has no 'MAX_STEPS = 1500' to cut short")
	}
	// The tolerance: 4 x this calibration's noise floor, but at least 1.0, from what
	// was measured on the shared 2-core development machine (a VM): noise floors of
	// 0.09-0.80 (median 0.2) over 11 calibrations with K=2-3; the speed of the
	// machine drifts by up to ~1.5x between minutes (the script gets 100% of a
	// core throughout: the host, not the VM, is busy), which a calibration's own
	// spread does not see, so the median FSR of record 1's script over 3 runs came
	// out between -0.83 and +0.42, record 2's between 0.85 and 1.19. Any fixed
	// floor below ~0.85 failed some of 8 suite runs. That the faster script scores
	// higher is checked on its own.
	tol := math.Max(1.0, 4*ref.NoiseFloor)
	const reps = 3
	type scoredRun struct {
		name, script string
	}
	var plan []scoredRun
	for i := 0; i < reps; i++ {
		plan = append(plan, scoredRun{"target (record 2)", string(targetScript)}, scoredRun{"start (record 1)", string(startScript)})
	}
	plan = append(plan, scoredRun{"broken (20 steps)", broken})
	fsrs := map[string][]float64{}
	var scored []string
	for _, c := range plan {
		r := s.submit(tok, map[string]any{"task": cpuTask}, map[string]string{task.ScriptName: c.script})
		got := s.waitTaskRun(tok, r.ID, 6*time.Minute)
		scored = append(scored, got.ID)
		if got.Score == nil {
			t.Errorf("%s: run %s (%s, %s) has no score", c.name, got.ID, got.State, got.Reason)
			continue
		}
		if got.Score.Profile != profile || got.Score.Task != cpuTask || got.Score.TStartMs == nil || *got.Score.TStartMs != ref.StartMs ||
			got.Score.NoiseFloor == nil || *got.Score.NoiseFloor != ref.NoiseFloor {
			t.Errorf("%s: score not against the calibrated reference on %s: %+v", c.name, profile, *got.Score)
		}
		wall := 0.0
		if got.StartedAt != nil && got.FinishedAt != nil {
			wall = got.FinishedAt.Sub(*got.StartedAt).Seconds()
		}
		reason := taskDeref(got.Score.Reason)
		t.Logf("MEASURED %s: state %s, valid %v, train %.0f ms, val loss %v, FSR %.3f, wall %.1f s, reason %q",
			c.name, got.State, got.Score.Valid, taskDeref(got.Score.TrainTimeMs), taskLoss(got.Score.FinalValLoss), got.Score.FSR, wall, reason)
		if c.script == broken {
			if got.Score.Valid || got.Score.FSR != 0 || !strings.Contains(reason, "target") {
				t.Errorf("the script cut short: valid %v, FSR %v, reason %q; want invalid, FSR 0, a reason naming the target", got.Score.Valid, got.Score.FSR, reason)
			}
			if got.State != "failed" {
				t.Errorf("the script cut short: run %s, want failed (missing the target is the script's failure)", got.State)
			}
			continue
		}
		if !got.Score.Valid || got.State != "succeeded" {
			t.Errorf("%s: run %s %s, valid %v (%s), want a valid run", c.name, got.ID, got.State, got.Score.Valid, reason)
			continue
		}
		fsrs[c.name] = append(fsrs[c.name], got.Score.FSR)
	}
	medTarget, medStart := taskMedian(fsrs["target (record 2)"]), taskMedian(fsrs["start (record 1)"])
	t.Logf("MEASURED FSR: record 2's script %.3f %v, record 1's script %.3f %v (medians, runs); tolerance %.3f = max(1.0, 4 x noise floor %.4f)",
		medTarget, fsrs["target (record 2)"], medStart, fsrs["start (record 1)"], tol, ref.NoiseFloor)
	if math.Abs(medTarget-1) > tol {
		t.Errorf("record 2's script: median FSR %.3f of %v, want |FSR-1| <= %.3f", medTarget, fsrs["target (record 2)"], tol)
	}
	if math.Abs(medStart) > tol {
		t.Errorf("record 1's script: median FSR %.3f of %v, want |FSR| <= %.3f", medStart, fsrs["start (record 1)"], tol)
	}
	// Interleaved, the two scripts share the machine's drift: record 2's must recover
	// at least half the calibrated gap over record 1's (measured: 0.77-1.86).
	if !(medTarget-medStart >= 0.5) {
		t.Errorf("record 2's script (median FSR %.3f) does not score clearly above record 1's (%.3f): want a difference >= 0.5", medTarget, medStart)
	}

	// The team's scored submissions of the task, newest first: the runs above, not calibration's.
	code, _, b = s.request("GET", "/v1/tasks/"+cpuTask+"/results", tok, nil, "")
	if code != 200 {
		t.Fatalf("results: %d %s", code, b)
	}
	var results struct{ Items []taskRunView }
	if err := json.Unmarshal(b, &results); err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, r := range results.Items {
		ids = append(ids, r.ID)
		if r.Score == nil || r.Team != "cpu" {
			t.Errorf("results: run %s of team %q, score %v", r.ID, r.Team, r.Score)
		}
	}
	if len(ids) != len(scored) {
		t.Errorf("results list %d runs, want the %d scored submissions (calibration runs stay off results)", len(ids), len(scored))
	}
	for i, id := range scored {
		if j := len(scored) - 1 - i; j >= len(ids) || ids[j] != id {
			t.Errorf("results %v: scored run %s not at position %d (newest first)", ids, id, j)
		}
	}
	// The leaderboard ranks the team by its best valid FSR among those submissions.
	best := math.Inf(-1)
	for _, fs := range fsrs {
		for _, f := range fs {
			best = math.Max(best, f)
		}
	}
	code, _, b = s.request("GET", "/v1/leaderboard?task="+cpuTask, tok, nil, "")
	var lb struct {
		Scores []struct {
			Team    string  `json:"team"`
			BestFsr float64 `json:"best_fsr"`
			Runs    int     `json:"runs"`
		} `json:"scores"`
	}
	if code != 200 || json.Unmarshal(b, &lb) != nil || len(lb.Scores) != 1 || lb.Scores[0].Team != "cpu" ||
		lb.Scores[0].BestFsr != best || lb.Scores[0].Runs != len(scored) {
		t.Errorf("leaderboard: %d %s; want team cpu with best FSR %v over %d submissions", code, b, best, len(scored))
	}
	// Another team sees none of them.
	other := s.team("others")
	code, _, b = s.request("GET", "/v1/tasks/"+cpuTask+"/results", other, nil, "")
	if code != 200 || !strings.Contains(string(b), `"items":[]`) {
		t.Errorf("another team's results: %d %s", code, b)
	}
}

// A calibration whose run fails stops at once with the run's reason and writes no
// reference times. (The dataset is planted broken: the worker trusts a dataset
// marked complete, and the script finds no shards.)
func TestTaskCalibrateAbortsOnFailedRun(t *testing.T) {
	docker := testenv.Docker(t)
	if _, err := docker.ImageInspect(context.Background(), torchBaseImage); err != nil {
		testenv.Missing(t, "docker", fmt.Sprintf("image %s missing (run scripts/base-torch.sh): %v", torchBaseImage, err))
	}
	s := startStack(t)
	tok := s.team("cpu")
	task := catalogTask(t, cpuTask)
	data := filepath.Join(s.dataDir, "datasets", task.Dataset)
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, ".complete"), []byte("planted\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(reproBin, "tasks", "calibrate", cpuTask, "--runs", "2", "--data-dir", s.dataDir)
	cmd.Env = append(os.Environ(), "REPRO_URL="+s.url, "REPRO_TOKEN="+tok)
	out, err := cmd.CombinedOutput()
	t.Logf("repro tasks calibrate:\n%s", out)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("calibrate with a failing run: %v, want exit status 1", err)
	}
	if !strings.Contains(string(out), "run 1/4 (start)") || !strings.Contains(string(out), "failed") || !strings.Contains(string(out), "repro logs ") {
		t.Errorf("calibrate does not say which run failed and why:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(s.dataDir, "refs")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed calibration left reference times: %v", err)
	}
	code, _, b := s.request("GET", "/v1/runs", tok, nil, "")
	var list struct{ Items []taskRunView }
	if code != 200 || json.Unmarshal(b, &list) != nil || len(list.Items) != 1 {
		t.Errorf("calibration went on after its first run failed: %d %s", code, b)
	}
}

// taskMedian is the median of xs (NaN for none).
func taskMedian(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func taskDeref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func taskLoss(p *float64) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprintf("%.4f", *p)
}
