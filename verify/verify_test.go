package verify

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

func seedp(s int64) *int64    { return &s }
func fp(v float64) *float64   { return &v }
func intp(v int) *int         { return &v }
func cand(pair int) slot      { return slot{pair, SideCandidate} }
func base(pair int) slot      { return slot{pair, SideBaseline} }
func (s slot) String() string { return fmt.Sprintf("%s %d", s.side, s.pair) }
func metricsJSON(loss, ms float64) json.RawMessage {
	b, err := json.Marshal(tasks.Metrics{Source: "log", FinalValLoss: &loss, TrainTimeMs: &ms})
	if err != nil {
		panic(err)
	}
	return b
}

// vrun is a verification run of slot s.
func vrun(id string, s slot, state store.State, seed int64) store.Run {
	return store.Run{ID: id, Side: s.side, Pair: s.pair, State: state, Spec: store.RunSpec{Seed: seedp(seed)}, Purpose: store.PurposeVerification}
}

// ok is a run that finished with loss and time.
func ok(id string, s slot, seed int64, loss, ms float64) store.Run {
	r := vrun(id, s, store.Succeeded, seed)
	r.Metrics, r.ExitCode, r.Worker = metricsJSON(loss, ms), intp(0), "node-1"
	return r
}

func canceled(r store.Run, requested bool) store.Run {
	r.State, r.CancelRequested = store.Canceled, requested
	return r
}

// firstFree is a deterministic seed function: the least seed from 1000 up that
// is not used.
func firstFree(used map[int64]bool) int64 {
	for s := int64(1000); ; s++ {
		if !used[s] {
			return s
		}
	}
}

func TestPlan(t *testing.T) {
	spec := VerificationSpec{Runs: 3}
	var all []store.Run // every slot done, A/B order
	for p := 1; p <= 3; p++ {
		all = append(all, ok(fmt.Sprint("c", p), cand(p), int64(p), 3.27, 1000), ok(fmt.Sprint("b", p), base(p), int64(p), 3.27, 1100))
	}
	err3 := func(s slot, seed int64) []store.Run {
		return []store.Run{vrun("e1", s, store.Error, seed), vrun("e2", s, store.Error, seed), vrun("e3", s, store.Error, seed)}
	}
	cat := func(rs ...any) []store.Run {
		var out []store.Run
		for _, r := range rs {
			switch r := r.(type) {
			case store.Run:
				out = append(out, r)
			case []store.Run:
				out = append(out, r...)
			}
		}
		return out
	}

	tests := []struct {
		name     string
		runs     []store.Run
		retries  int
		wait     string // ID of the run to wait for
		create   *slot
		seed     int64
		done     bool
		wantUsed []int64 // the seeds the seed function is told are used (nil: not called)
	}{
		{name: "empty: candidate 1", create: &slot{1, SideCandidate}, seed: 1000, wantUsed: []int64{}},
		{name: "then baseline 1", runs: cat(ok("c1", cand(1), 1000, 3.27, 1000)), create: &slot{1, SideBaseline}, seed: 1000, wantUsed: []int64{}},
		{name: "then candidate 2 with an unused seed", runs: cat(ok("c1", cand(1), 1000, 3.27, 1000), ok("b1", base(1), 1000, 3.27, 1100)),
			create: &slot{2, SideCandidate}, seed: 1001, wantUsed: []int64{1000}},
		{name: "then baseline 2", runs: cat(ok("c1", cand(1), 1000, 3.27, 1000), ok("b1", base(1), 1003, 3.27, 1100), ok("c2", cand(2), 1001, 3.27, 1000)),
			create: &slot{2, SideBaseline}, seed: 1000, wantUsed: []int64{1003}},
		{name: "waits for a queued run", runs: cat(vrun("c1", cand(1), store.Queued, 5)), wait: "c1"},
		{name: "waits for a running run", runs: cat(ok("c1", cand(1), 5, 3.27, 1000), vrun("b1", base(1), store.Running, 6)), wait: "b1"},
		{name: "waits for an archiving retry", runs: cat(vrun("c1", cand(1), store.Error, 5), vrun("c1b", cand(1), store.Archiving, 5)), wait: "c1b"},
		{name: "error: retried with its seed", runs: cat(vrun("c1", cand(1), store.Error, 42)), retries: 2, create: &slot{1, SideCandidate}, seed: 42},
		{name: "second error: retried again", runs: cat(vrun("c1", cand(1), store.Error, 42), vrun("c1b", cand(1), store.Error, 42)), retries: 2,
			create: &slot{1, SideCandidate}, seed: 42},
		{name: "retries spent: the slot is done", runs: err3(cand(1), 42), retries: 2, create: &slot{1, SideBaseline}, seed: 1000, wantUsed: []int64{}},
		{name: "no retries", runs: cat(vrun("c1", cand(1), store.Error, 42)), retries: 0, create: &slot{1, SideBaseline}, seed: 1000, wantUsed: []int64{}},
		{name: "an error's seed stays used", runs: cat(ok("c1", cand(1), 1000, 3.27, 1000), err3(base(1), 1001)), retries: 2,
			create: &slot{2, SideCandidate}, seed: 1001, wantUsed: []int64{1000}},
		{name: "canceled on request: not retried", runs: cat(canceled(vrun("c1", cand(1), store.Queued, 7), true)), retries: 2,
			create: &slot{1, SideBaseline}, seed: 1000, wantUsed: []int64{}},
		{name: "canceled by the system: retried", runs: cat(canceled(vrun("c1", cand(1), store.Queued, 7), false)), retries: 2,
			create: &slot{1, SideCandidate}, seed: 7},
		{name: "failed: not retried", runs: cat(vrun("c1", cand(1), store.Failed, 7)), retries: 2, create: &slot{1, SideBaseline}, seed: 1000, wantUsed: []int64{}},
		{name: "error without a seed: not retried", runs: cat(store.Run{ID: "c1", Side: SideCandidate, Pair: 1, State: store.Error}), retries: 2,
			create: &slot{1, SideBaseline}, seed: 1000, wantUsed: []int64{}},
		{name: "every slot final: done", runs: all, retries: 2, done: true},
		{name: "done with a spent slot last", runs: cat(all[:5], err3(base(3), 9)), retries: 2, done: true},
		{name: "a gap is filled first", runs: cat(all[:2], all[3:]), retries: 2, create: &slot{2, SideCandidate}, seed: 1000, wantUsed: []int64{1, 3}},
		{name: "runs of other sides are ignored", runs: cat(all, store.Run{ID: "x", Side: SideRerun, Pair: 1, State: store.Queued, Spec: store.RunSpec{Seed: seedp(1)}}),
			retries: 2, done: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var used map[int64]bool
			seed := func(u map[int64]bool) int64 {
				if used != nil {
					t.Fatal("seed function called twice")
				}
				used = u
				return firstFree(u)
			}
			st := plan(spec, tt.runs, tt.retries, seed)
			switch {
			case tt.wait != "":
				if st.wait == nil || st.wait.ID != tt.wait || st.create != nil || st.done {
					t.Fatalf("step = %+v, want to wait for %s", st, tt.wait)
				}
			case tt.create != nil:
				if st.create == nil || *st.create != *tt.create || st.seed != tt.seed || st.wait != nil || st.done {
					t.Fatalf("step = {create %v seed %d wait %v done %v}, want create %v seed %d", st.create, st.seed, st.wait, st.done, *tt.create, tt.seed)
				}
			default:
				if !st.done || st.create != nil || st.wait != nil {
					t.Fatalf("step = %+v, want done", st)
				}
			}
			if tt.wantUsed == nil {
				if used != nil {
					t.Errorf("seed function called with %v; a retry keeps its seed", used)
				}
				return
			}
			if used == nil {
				t.Fatal("seed function not called")
			}
			if len(used) != len(tt.wantUsed) {
				t.Errorf("used = %v, want %v", used, tt.wantUsed)
			}
			for _, s := range tt.wantUsed {
				if !used[s] {
					t.Errorf("used = %v, want %v", used, tt.wantUsed)
				}
			}
		})
	}
}

// TestPlanSchedule plays a whole verification: the order is strictly A/B/A/B,
// a run that ends "error" is re-run in its slot with its seed, and every
// slot of a side has its own seed.
func TestPlanSchedule(t *testing.T) {
	for _, seedFn := range []struct {
		name string
		f    func(map[int64]bool) int64
	}{{"deterministic", firstFree}, {"newSeed", newSeed}} {
		t.Run(seedFn.name, func(t *testing.T) {
			spec := VerificationSpec{Runs: 4}
			var runs []store.Run
			var order []string
			errorsLeft := map[slot]int{base(1): 1, cand(3): 2, base(4): 3} // base 4 runs out of retries
			for step := 0; ; step++ {
				if step > 50 {
					t.Fatal("the plan does not end")
				}
				st := plan(spec, runs, 2, seedFn.f)
				if st.done {
					break
				}
				if st.wait != nil {
					t.Fatalf("step %d waits for %s; every run here has ended", step, st.wait.ID)
				}
				s := *st.create
				order = append(order, s.String())
				r := ok(fmt.Sprint("r", step), s, st.seed, 3.27, 1000)
				if errorsLeft[s] > 0 {
					errorsLeft[s]--
					r.State, r.Metrics = store.Error, nil
				}
				runs = append(runs, r)
			}
			want := []string{
				"candidate 1", "baseline 1", "baseline 1",
				"candidate 2", "baseline 2",
				"candidate 3", "candidate 3", "candidate 3", "baseline 3",
				"candidate 4", "baseline 4", "baseline 4", "baseline 4",
			}
			if strings.Join(order, ", ") != strings.Join(want, ", ") {
				t.Errorf("order:\n%s\nwant:\n%s", strings.Join(order, ", "), strings.Join(want, ", "))
			}
			// Seeds: the same within a slot, never repeated across slots of a side.
			slotSeed := map[slot]int64{}
			sideSeeds := map[string]map[int64]slot{SideCandidate: {}, SideBaseline: {}}
			for _, r := range runs {
				s := slot{r.Pair, r.Side}
				if prev, ok := slotSeed[s]; ok {
					if prev != *r.Spec.Seed {
						t.Errorf("%v: retry with seed %d, first %d", s, *r.Spec.Seed, prev)
					}
					continue
				}
				slotSeed[s] = *r.Spec.Seed
				if other, dup := sideSeeds[r.Side][*r.Spec.Seed]; dup {
					t.Errorf("seed %d used by %v and %v", *r.Spec.Seed, other, s)
				}
				sideSeeds[r.Side][*r.Spec.Seed] = s
				if *r.Spec.Seed < 0 || *r.Spec.Seed >= 1<<31 {
					t.Errorf("seed %d out of [0, 2^31)", *r.Spec.Seed)
				}
			}
		})
	}
}

func TestNewSeed(t *testing.T) {
	used := map[int64]bool{}
	for range 2000 {
		s := newSeed(used)
		if used[s] {
			t.Fatalf("seed %d drawn twice", s)
		}
		if s < 0 || s >= 1<<31 {
			t.Fatalf("seed %d out of [0, 2^31)", s)
		}
		used[s] = true
	}
}

func TestVerdictRun(t *testing.T) {
	withM := func(r store.Run, m json.RawMessage, exit *int) store.Run {
		r.Metrics, r.ExitCode = m, exit
		return r
	}
	good := metricsJSON(3.2712, 180000)
	high := metricsJSON(3.2950, 175000)
	lossOnly, _ := json.Marshal(tasks.Metrics{FinalValLoss: fp(3.27)})
	timeOnly, _ := json.Marshal(tasks.Metrics{TrainTimeMs: fp(1000)})
	oom := withM(vrun("r", cand(2), store.Failed, 9), good, intp(0))
	oom.OOMKilled = true
	timedOut := withM(vrun("r", cand(2), store.Failed, 9), good, intp(0))
	timedOut.TimedOut = true
	tests := []struct {
		name   string
		r      store.Run
		status tasks.VerdictRunStatus
		loss   float64
		ms     float64
	}{
		{"succeeded with metrics", withM(vrun("r", cand(2), store.Succeeded, 9), good, intp(0)), tasks.VerdictRunOK, 3.2712, 180000},
		{"missed the target (failed, exit 0)", withM(vrun("r", cand(2), store.Failed, 9), high, intp(0)), tasks.VerdictRunOK, 3.2950, 175000},
		{"failed, exit 1", withM(vrun("r", cand(2), store.Failed, 9), good, intp(1)), tasks.VerdictRunFailed, 0, 0},
		{"failed, no exit code", withM(vrun("r", cand(2), store.Failed, 9), good, nil), tasks.VerdictRunFailed, 0, 0},
		{"failed, OOM", oom, tasks.VerdictRunFailed, 0, 0},
		{"failed, timed out", timedOut, tasks.VerdictRunFailed, 0, 0},
		{"failed without metrics", withM(vrun("r", cand(2), store.Failed, 9), nil, intp(0)), tasks.VerdictRunFailed, 0, 0},
		{"succeeded without metrics", vrun("r", cand(2), store.Succeeded, 9), tasks.VerdictRunFailed, 0, 0},
		{"succeeded, no train time", withM(vrun("r", cand(2), store.Succeeded, 9), lossOnly, intp(0)), tasks.VerdictRunFailed, 0, 0},
		{"succeeded, no loss", withM(vrun("r", cand(2), store.Succeeded, 9), timeOnly, intp(0)), tasks.VerdictRunFailed, 0, 0},
		{"succeeded, unreadable metrics", withM(vrun("r", cand(2), store.Succeeded, 9), json.RawMessage(`{"final_val_loss":"x"`), intp(0)), tasks.VerdictRunFailed, 0, 0},
		{"error", withM(vrun("r", cand(2), store.Error, 9), good, nil), tasks.VerdictRunError, 0, 0},
		{"canceled", withM(canceled(vrun("r", cand(2), store.Running, 9), true), good, intp(0)), tasks.VerdictRunError, 0, 0},
		{"canceled by the system", canceled(vrun("r", cand(2), store.Running, 9), false), tasks.VerdictRunError, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.r.Worker = "node-7"
			v := verdictRun(tt.r)
			if v.Status != tt.status || v.ValLoss != tt.loss || v.TrainTimeMs != tt.ms {
				t.Errorf("verdictRun = %+v, want status %s loss %v time %v", v, tt.status, tt.loss, tt.ms)
			}
			if v.RunID != "r" || v.Pair != 2 || v.Seed != 9 || v.Worker != "node-7" {
				t.Errorf("identity = %+v", v)
			}
		})
	}
	if v := verdictRun(store.Run{ID: "x", State: store.Succeeded}); v.Seed != 0 || v.Status != tasks.VerdictRunFailed {
		t.Errorf("no seed: %+v", v)
	}
}

// abRuns interleaves candidate and baseline runs, pair by pair, on one worker.
func abRuns(candLoss, candMs, baseLoss, baseMs []float64) []store.Run {
	var runs []store.Run
	for i := range candLoss {
		p := i + 1
		runs = append(runs, ok(fmt.Sprint("cand-", p), cand(p), int64(100+p), candLoss[i], candMs[i]))
		if i < len(baseLoss) {
			runs = append(runs, ok(fmt.Sprint("base-", p), base(p), int64(200+p), baseLoss[i], baseMs[i]))
		}
	}
	return runs
}

var (
	fastLoss = []float64{3.2750, 3.2755, 3.2748, 3.2752, 3.2745}
	fastMs   = []float64{170000, 170400, 169800, 170100, 169900}
	highLoss = []float64{3.2900, 3.2910, 3.2890, 3.2905, 3.2895}
	baseLoss = []float64{3.2790, 3.2785, 3.2795, 3.2788, 3.2792}
	baseMs   = []float64{180000, 180500, 179700, 180200, 180100}
)

func verifSpec(runs int) VerificationSpec {
	return VerificationSpec{Task: "t1", Profile: "8xH100", Runs: runs, Options: tasks.VerdictOptions{TargetLoss: 3.28}}
}

func TestJudge(t *testing.T) {
	failedRuns := abRuns(fastLoss, fastMs, baseLoss, baseMs)
	failedRuns[4].State, failedRuns[4].ExitCode = store.Failed, intp(1) // candidate 3 crashed
	retried := abRuns(fastLoss, fastMs, baseLoss, baseMs)
	errRun := vrun("cand-2-error", cand(2), store.Error, 102) // the first try of candidate 2, same seed
	retried = append(retried[:2:2], append([]store.Run{errRun}, retried[2:]...)...)
	pending := append(abRuns(fastLoss, fastMs, baseLoss, baseMs), vrun("cand-6", cand(6), store.Running, 106))

	tests := []struct {
		name     string
		runs     []store.Run
		verdict  tasks.VerdictOutcome
		n, pairs int
		errored  int
		reason   string
	}{
		{"clearly faster and below the target", abRuns(fastLoss, fastMs, baseLoss, baseMs), tasks.VerdictVerified, 5, 5, 0, "the candidate is faster"},
		{"losses above the target", abRuns(highLoss, fastMs, baseLoss, baseMs), tasks.VerdictRejected, 5, 5, 0, "above the target"},
		{"slower", abRuns(fastLoss, baseMs, baseLoss, fastMs), tasks.VerdictRejected, 5, 5, 0, "slower than the baseline"},
		{"a failed candidate run", failedRuns, tasks.VerdictRejected, 4, 4, 0, "1 of 5 candidate runs failed"},
		{"an error re-run with its seed", retried, tasks.VerdictVerified, 5, 5, 1, "infrastructure error"},
		{"unfinished runs are left out", pending, tasks.VerdictVerified, 5, 5, 0, "the candidate is faster"},
		{"too few runs", abRuns(fastLoss[:3], fastMs[:3], baseLoss[:3], baseMs[:3]), tasks.VerdictInconclusive, 3, 3, 0, "fewer than the 5 required"},
		{"no runs", nil, tasks.VerdictInconclusive, 0, 0, 0, "only 0 valid candidate runs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := judge(verifSpec(5), tt.runs)
			if err != nil {
				t.Fatal(err)
			}
			if v.Verdict != tt.verdict || v.N != tt.n || v.Pairs != tt.pairs || len(v.Errored) != tt.errored {
				t.Errorf("verdict %s n %d pairs %d errored %d, want %s %d %d %d; reasons:\n%s",
					v.Verdict, v.N, v.Pairs, len(v.Errored), tt.verdict, tt.n, tt.pairs, tt.errored, strings.Join(v.Reasons, "\n"))
			}
			if !strings.Contains(strings.Join(v.Reasons, "\n"), tt.reason) {
				t.Errorf("reasons do not say %q:\n%s", tt.reason, strings.Join(v.Reasons, "\n"))
			}
			if len(v.DuplicateSeeds) != 0 {
				t.Errorf("duplicate seeds: %+v", v.DuplicateSeeds)
			}
			if v.N >= 2 && (v.Loss == nil || math.IsNaN(v.Loss.Test.P)) {
				t.Errorf("loss test = %+v", v.Loss)
			}
			if _, err := json.Marshal(v); err != nil {
				t.Errorf("verdict does not marshal: %v", err)
			}
		})
	}

	t.Run("rejected loss p", func(t *testing.T) {
		v, _ := judge(verifSpec(5), abRuns(highLoss, fastMs, baseLoss, baseMs))
		if v.Loss == nil || v.Loss.PGreater >= 0.01 || v.Loss.Test.P < 0.99 {
			t.Errorf("loss = %+v", v.Loss)
		}
		if wantP := fmt.Sprintf("p=%.3g", v.Loss.PGreater); !strings.Contains(v.Reasons[0], wantP) || !strings.Contains(v.Reasons[0], "3.2900") {
			t.Errorf("first reason %q does not give the mean and its p", v.Reasons[0])
		}
	})

	t.Run("bad options", func(t *testing.T) {
		if _, err := judge(VerificationSpec{Runs: 5}, abRuns(fastLoss, fastMs, baseLoss, baseMs)); err == nil {
			t.Error("no target loss: no error")
		}
	})
}

func TestVerificationProgress(t *testing.T) {
	spec := verifSpec(5)
	all := abRuns(fastLoss, fastMs, baseLoss, baseMs)
	lossP := func(runs []store.Run) float64 {
		v, err := judge(spec, runs)
		if err != nil || v.Loss == nil {
			t.Fatalf("judge: %v %+v", err, v.Loss)
		}
		return v.Loss.Test.P
	}
	tests := []struct {
		name    string
		runs    []store.Run
		want    VerificationProgress
		wantP   bool // LossP is the judge's p over the runs
		verdict string
	}{
		{"nothing yet", nil, VerificationProgress{Done: 0, Total: 10}, false, ""},
		{"first run queued", []store.Run{vrun("cand-1", cand(1), store.Queued, 1)}, VerificationProgress{Done: 0, Total: 10, CurrentRun: "cand-1"}, false, ""},
		{"one pair done", all[:2], VerificationProgress{Done: 2, Total: 10}, false, "inconclusive"},
		{"two pairs and one running", append(all[:4:4], vrun("cand-3", cand(3), store.Running, 103)),
			VerificationProgress{Done: 4, Total: 10, CurrentRun: "cand-3"}, true, "inconclusive"},
		{"a retried slot counts once", append(all[:1:1], vrun("base-1-err", base(1), store.Error, 201), all[1], all[2]),
			VerificationProgress{Done: 3, Total: 10}, true, "inconclusive"},
		{"an error to be re-run is not done", append(all[:1:1], vrun("base-1-err", base(1), store.Error, 201)),
			VerificationProgress{Done: 1, Total: 10}, false, "inconclusive"},
		{"an error re-run too often is done", append(all[:1:1], vrun("e1", base(1), store.Error, 201), vrun("e2", base(1), store.Error, 201), vrun("e3", base(1), store.Error, 201)),
			VerificationProgress{Done: 2, Total: 10}, false, "inconclusive"},
		{"a run canceled on request is done", append(all[:1:1], canceled(vrun("b1", base(1), store.Running, 201), true)),
			VerificationProgress{Done: 2, Total: 10}, false, "inconclusive"},
		{"all done", all, VerificationProgress{Done: 10, Total: 10}, true, "verified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := verificationProgress(spec, tt.runs, 2)
			if p.Done != tt.want.Done || p.Total != tt.want.Total || p.CurrentRun != tt.want.CurrentRun || p.Verdict != tt.verdict {
				t.Errorf("progress = %+v, want %+v verdict %q", p, tt.want, tt.verdict)
			}
			if tt.wantP {
				if want := lossP(tt.runs); p.LossP != want || p.LossP <= 0 || p.LossP >= 1 {
					t.Errorf("LossP = %v, want %v", p.LossP, want)
				}
			} else if p.LossP != 0 {
				t.Errorf("LossP = %v with fewer than 2 candidate runs", p.LossP)
			}
			if _, err := json.Marshal(p); err != nil {
				t.Errorf("progress does not marshal: %v", err)
			}
		})
	}
}
