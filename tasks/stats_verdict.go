package tasks

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// VerdictOutcome is the verdict on a record claim.
type VerdictOutcome string

// The verdicts on a record claim.
const (
	VerdictVerified     VerdictOutcome = "verified"
	VerdictRejected     VerdictOutcome = "rejected"
	VerdictInconclusive VerdictOutcome = "inconclusive"
)

// VerdictRunStatus is how a verification run ended, as far as the verdict is
// concerned.
type VerdictRunStatus string

// The statuses of a verification run.
const (
	// VerdictRunOK: the run finished and reported a final val loss and train
	// time. A run whose loss missed the target is still "ok" here: its loss
	// is part of the sample the loss test judges (leaving it out would bias
	// the mean).
	VerdictRunOK VerdictRunStatus = "ok"
	// VerdictRunFailed: the submitted script is at fault (non-zero exit,
	// OOM, over its time limit, no final loss). Counts against the claim.
	VerdictRunFailed VerdictRunStatus = "failed"
	// VerdictRunError: the infrastructure is at fault. Never held against
	// the claim; the run may be re-run, with the same seed.
	VerdictRunError VerdictRunStatus = "error"
)

// VerdictRun is one verification run of the candidate or of the baseline.
type VerdictRun struct {
	RunID       string           `json:"run_id,omitempty"`
	Seed        int64            `json:"seed"`
	Status      VerdictRunStatus `json:"status"`
	ValLoss     float64          `json:"val_loss"`      // final val loss; used when Status is ok
	TrainTimeMs float64          `json:"train_time_ms"` // train time; used when Status is ok
	// Pair, when > 0, is the A/B slot of an interleaved schedule: the
	// candidate run and the baseline run with the same Pair ran back to back
	// on the same worker. 0: not paired.
	Pair int `json:"pair,omitempty"`
	// Worker names the machine the run ran on, when known. A pair whose two
	// runs name different workers is not used as a pair.
	Worker string `json:"worker,omitempty"`
}

// Defaults of VerdictOptions.
const (
	DefaultVerdictAlpha   = 0.01 // the speedrun's p < 0.01
	DefaultVerdictMinRuns = 5
	DefaultVerdictLevel   = 0.95
)

// VerdictOptions parameterise DecideVerdict. Zero values of Alpha, MinRuns
// and Level select the defaults; TargetLoss is required.
type VerdictOptions struct {
	TargetLoss float64 `json:"target_loss"` // e.g. 3.28
	Alpha      float64 `json:"alpha"`       // significance level of every test; default 0.01
	MinRuns    int     `json:"min_runs"`    // least valid candidate runs to verify; default 5, at least 2
	// MaxFailedFraction is the largest tolerated share of failed candidate
	// runs (see DecideVerdict). Its zero value tolerates none.
	MaxFailedFraction float64 `json:"max_failed_fraction"`
	Level             float64 `json:"level"` // of the reported confidence intervals; default 0.95
}

// VerdictRunNote names a run that was not counted, or counted against the
// claim, and why.
type VerdictRunNote struct {
	Side   string           `json:"side"`  // "candidate" or "baseline"
	Index  int              `json:"index"` // position in the input slice
	RunID  string           `json:"run_id,omitempty"`
	Seed   int64            `json:"seed"`
	Status VerdictRunStatus `json:"status"`
	Reason string           `json:"reason"`
}

// VerdictLoss is the loss side of a verdict: the candidate's final val losses.
type VerdictLoss struct {
	Summary  MeanInterval `json:"summary"`   // mean, standard deviation and CI
	Test     TTestResult  `json:"test"`      // H1: mean < target ("less"); Test.P is the loss p-value
	PGreater float64      `json:"p_greater"` // the same t for H1: mean > target
}

// VerdictTimes summarises the train times of one side.
type VerdictTimes struct {
	Summary       MeanInterval `json:"summary"`                   // mean ± CI, ms
	OlympicMeanMs *float64     `json:"olympic_mean_ms,omitempty"` // without fastest and slowest; 3 runs or more
}

// Verdict is the archived outcome of verifying a record claim. Its JSON is
// meant to be stored beside the runs' bundles and shown on the leaderboard.
type Verdict struct {
	Verdict VerdictOutcome `json:"verdict"`
	// Reasons: first the ones that decided the verdict, then what supports
	// it, then notes (runs left out, pairs broken).
	Reasons []string       `json:"reasons"`
	Options VerdictOptions `json:"options"` // as applied, defaults filled in

	N         int `json:"n"`          // valid candidate runs (loss test sample)
	BaselineN int `json:"baseline_n"` // valid baseline runs
	Pairs     int `json:"pairs"`      // complete A/B pairs

	Loss          *VerdictLoss  `json:"loss,omitempty"` // nil when N < 2
	CandidateTime *VerdictTimes `json:"candidate_time,omitempty"`
	BaselineTime  *VerdictTimes `json:"baseline_time,omitempty"`
	// SpeedTest names the test the speed decision used: "paired", "welch",
	// or "none" when neither could be computed.
	SpeedTest string           `json:"speed_test"`
	Paired    *SpeedupEstimate `json:"paired,omitempty"` // over complete pairs; nil below 2 pairs
	Welch     *SpeedupEstimate `json:"welch,omitempty"`  // over all valid runs; nil below 2 per side

	Failed         []VerdictRunNote `json:"failed"`          // script at fault; candidate ones count against the claim
	Invalid        []VerdictRunNote `json:"invalid"`         // "ok" runs with a NaN/Inf/negative loss or time; treated as failed
	Errored        []VerdictRunNote `json:"errored"`         // infrastructure at fault; not held against the claim
	DuplicateSeeds []VerdictRunNote `json:"duplicate_seeds"` // repeats of a seed already counted; ignored
}

// Speed tests named in Verdict.SpeedTest.
const (
	VerdictSpeedPaired = "paired"
	VerdictSpeedWelch  = "welch"
	VerdictSpeedNone   = "none"
)

// DecideVerdict judges a record claim from the candidate's verification runs
// and the baseline's (the previous record, run on the same worker, ideally
// interleaved A/B/A/B with Pair set).
//
// Which runs count, on each side separately and in input order:
//   - "error" runs are listed in Errored and left out; they do not claim
//     their seed, so a re-run with the same seed counts.
//   - "ok" and "failed" runs claim their seed: a later run with a seed
//     already claimed on that side is listed in DuplicateSeeds and ignored,
//     whatever its status (same-seed repeats are not independent runs, and
//     re-running a failure until it passes would be cherry-picking).
//   - "failed" runs are listed in Failed; "ok" runs whose loss is NaN, ±Inf
//     or negative, or whose time is NaN, ±Inf or not positive, are listed in
//     Invalid and treated as failed. The other "ok" runs are valid.
//   - Pairs are the Pair numbers with one valid run on each side (and, where
//     both name a Worker, the same one). Broken pairs are noted in Reasons.
//
// Statistics: the loss test is OneSampleTTestLess over the valid candidate
// runs' losses against TargetLoss (Loss.Test.P, and Loss.PGreater for the
// opposite direction). The speed test is PairedSpeedup over the complete
// pairs when there are at least 2, otherwise WelchSpeedup over all valid
// runs when each side has at least 2; both are reported when computable.
//
// The verdict:
//   - rejected when any of: failed + invalid candidate runs make up more
//     than MaxFailedFraction of the candidate runs that count (valid +
//     failed + invalid; by default any failure rejects); the mean loss is
//     above the target with Loss.PGreater < Alpha; the candidate is slower
//     than the baseline with p < Alpha (speed test, H1 "slower").
//   - verified when not rejected and all of: N ≥ MinRuns; Loss.Test.P <
//     Alpha; the speed test's p (H1 "faster") < Alpha.
//   - inconclusive otherwise: too few valid runs (N < 2 or N < MinRuns), no
//     baseline to compare with, or a p-value between. Where the observed
//     mean and spread would reach Alpha with more runs, a reason says about
//     how many in all (a rough guide, not a promise).
//
// An error is returned only for unusable options (TargetLoss not finite and
// positive, Alpha not in (0, 0.5), MinRuns < 2, MaxFailedFraction not in
// [0, 1), Level not in (0, 1)) or an unknown run status; bad run values give
// a verdict with reasons, not an error.
func DecideVerdict(candidate, baseline []VerdictRun, opts VerdictOptions) (Verdict, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return Verdict{}, err
	}
	v := Verdict{
		Options:        o,
		SpeedTest:      VerdictSpeedNone,
		Failed:         []VerdictRunNote{},
		Invalid:        []VerdictRunNote{},
		Errored:        []VerdictRunNote{},
		DuplicateSeeds: []VerdictRunNote{},
	}
	cand, err := statsSortVerdictRuns("candidate", candidate, &v)
	if err != nil {
		return Verdict{}, err
	}
	base, err := statsSortVerdictRuns("baseline", baseline, &v)
	if err != nil {
		return Verdict{}, err
	}
	v.N, v.BaselineN = len(cand.valid), len(base.valid)

	var rejected, pending, support, notes []string

	// Failed runs.
	if counted := len(cand.valid) + cand.failed; cand.failed > 0 {
		frac := float64(cand.failed) / float64(counted)
		msg := fmt.Sprintf("%d of %d candidate runs failed or reported no usable loss/time (%.0f%%)", cand.failed, counted, 100*frac)
		if frac > o.MaxFailedFraction {
			rejected = append(rejected, fmt.Sprintf("%s, more than the %.0f%% tolerated", msg, 100*o.MaxFailedFraction))
		} else {
			notes = append(notes, fmt.Sprintf("%s, within the %.0f%% tolerated", msg, 100*o.MaxFailedFraction))
		}
	}
	if base.failed > 0 {
		notes = append(notes, fmt.Sprintf("%d baseline runs failed or reported no usable loss/time; left out", base.failed))
	}
	if n := cand.errored + base.errored; n > 0 {
		notes = append(notes, fmt.Sprintf("%d runs ended in an infrastructure error (%d candidate, %d baseline); left out, not held against the claim, and may be re-run", n, cand.errored, base.errored))
	}
	if n := len(v.DuplicateSeeds); n > 0 {
		notes = append(notes, fmt.Sprintf("%d runs repeated a seed already counted on their side; ignored, since same-seed repeats are not independent runs", n))
	}

	// Loss.
	losses := statsVerdictValues(cand.valid, func(r VerdictRun) float64 { return r.ValLoss })
	switch {
	case len(losses) < 2:
		pending = append(pending, fmt.Sprintf("only %d valid candidate runs: the loss test needs at least 2, the verdict %d", len(losses), o.MinRuns))
	default:
		l, err := statsVerdictLoss(losses, o)
		if err != nil {
			return Verdict{}, err
		}
		v.Loss = l
		m, p, pg := l.Summary.Mean, l.Test.P, l.PGreater
		desc := fmt.Sprintf("mean final val loss %.4f (n=%d, sd %.4f) vs target %.4g", m, l.Summary.N, l.Summary.StdDev, o.TargetLoss)
		switch {
		case m > o.TargetLoss && pg < o.Alpha:
			rejected = append(rejected, fmt.Sprintf("%s: above the target, one-sided %s < %.3g", desc, statsFmtP(l.Test, pg), o.Alpha))
		case p < o.Alpha:
			support = append(support, fmt.Sprintf("%s: below the target, one-sided %s < %.3g", desc, statsFmtP(l.Test, p), o.Alpha))
		default:
			msg := fmt.Sprintf("%s: one-sided %s, not below %.3g", desc, statsFmtP(l.Test, p), o.Alpha)
			if l.Test.StdErr > 0 {
				sd := l.Summary.StdDev
				if need := statsRunsToSettle(o.TargetLoss-m, o.Alpha, len(losses), func(n float64) (float64, float64) {
					return sd / math.Sqrt(n), n - 1
				}); need > 0 {
					msg += fmt.Sprintf("; about %d candidate runs in all (%d more) would reach p < %.3g if the observed mean and spread held (a rough guide)", need, need-len(losses), o.Alpha)
				}
			}
			pending = append(pending, msg)
		}
		if len(losses) < o.MinRuns {
			pending = append(pending, fmt.Sprintf("only %d valid candidate runs, fewer than the %d required", len(losses), o.MinRuns))
		}
	}

	// Times.
	candMs := statsVerdictValues(cand.valid, func(r VerdictRun) float64 { return r.TrainTimeMs })
	baseMs := statsVerdictValues(base.valid, func(r VerdictRun) float64 { return r.TrainTimeMs })
	if v.CandidateTime, err = statsVerdictTimes(candMs, o.Level); err != nil {
		return Verdict{}, err
	}
	if v.BaselineTime, err = statsVerdictTimes(baseMs, o.Level); err != nil {
		return Verdict{}, err
	}
	pc, pb, pairNotes := statsVerdictPairs(cand.valid, base.valid)
	notes = append(notes, pairNotes...)
	v.Pairs = len(pc)
	if len(pc) >= 2 {
		e, err := PairedSpeedup(pc, pb, o.Level)
		if err != nil {
			return Verdict{}, err
		}
		v.Paired = &e
	}
	if len(candMs) >= 2 && len(baseMs) >= 2 {
		e, err := WelchSpeedup(candMs, baseMs, o.Level)
		if err != nil {
			return Verdict{}, err
		}
		v.Welch = &e
	}
	speed := v.Welch
	switch {
	case v.Paired != nil:
		v.SpeedTest, speed = VerdictSpeedPaired, v.Paired
	case v.Welch != nil:
		v.SpeedTest = VerdictSpeedWelch
	}
	if speed == nil {
		pending = append(pending, fmt.Sprintf("no speed comparison: it needs at least 2 valid runs on each side (candidate %d, baseline %d) or 2 complete A/B pairs (%d)", len(candMs), len(baseMs), len(pc)))
	} else {
		var what string
		if v.SpeedTest == VerdictSpeedPaired {
			what = fmt.Sprintf("paired test over %d A/B pairs", v.Pairs)
		} else {
			what = fmt.Sprintf("Welch test over %d candidate and %d baseline runs", len(candMs), len(baseMs))
		}
		desc := fmt.Sprintf("candidate %.1f ms vs baseline %.1f ms, %.1f ms saved (%.0f%% CI %.1f to %.1f), speedup %.4fx (%s)",
			speed.CandidateMeanMs, speed.BaselineMeanMs, speed.SavedMs, 100*o.Level, speed.SavedLowMs, speed.SavedHighMs, speed.Ratio, what)
		p, pSlower := speed.Test.P, speed.Test.PFor(TTestLess)
		switch {
		case speed.SavedMs < 0 && pSlower < o.Alpha:
			rejected = append(rejected, fmt.Sprintf("the candidate is slower than the baseline: %s, one-sided %s < %.3g", desc, statsFmtP(speed.Test, pSlower), o.Alpha))
		case p < o.Alpha:
			support = append(support, fmt.Sprintf("the candidate is faster: %s, one-sided %s < %.3g", desc, statsFmtP(speed.Test, p), o.Alpha))
		default:
			msg := fmt.Sprintf("speed not settled: %s, one-sided %s, not below %.3g", desc, statsFmtP(speed.Test, p), o.Alpha)
			if need := statsSpeedRunsToSettle(v, speed, o.Alpha); need > 0 {
				unit := "A/B pairs"
				if v.SpeedTest == VerdictSpeedWelch {
					unit = "runs on each side"
				}
				msg += fmt.Sprintf("; about %d %s in all would reach p < %.3g if the observed means and spreads held (a rough guide)", need, unit, o.Alpha)
			}
			pending = append(pending, msg)
		}
	}

	switch {
	case len(rejected) > 0:
		v.Verdict = VerdictRejected
	case len(pending) > 0:
		v.Verdict = VerdictInconclusive
	default:
		v.Verdict = VerdictVerified
	}
	v.Reasons = slices.Concat(rejected, pending, support, notes)
	if v.Reasons == nil {
		v.Reasons = []string{}
	}
	return v, nil
}

// withDefaults fills in the zero-valued options and checks them all.
// Defaults returns o with its zero values replaced by the defaults, or an
// error naming the option that is unusable.
func (o VerdictOptions) Defaults() (VerdictOptions, error) { return o.withDefaults() }

func (o VerdictOptions) withDefaults() (VerdictOptions, error) {
	if o.Alpha == 0 {
		o.Alpha = DefaultVerdictAlpha
	}
	if o.MinRuns == 0 {
		o.MinRuns = DefaultVerdictMinRuns
	}
	if o.Level == 0 {
		o.Level = DefaultVerdictLevel
	}
	var bad []string
	if !statsFinite(o.TargetLoss) || o.TargetLoss <= 0 {
		bad = append(bad, fmt.Sprintf("target loss %v is not a positive finite number", o.TargetLoss))
	}
	if !(o.Alpha > 0 && o.Alpha < 0.5) {
		bad = append(bad, fmt.Sprintf("alpha %v not in (0, 0.5)", o.Alpha))
	}
	if o.MinRuns < 2 {
		bad = append(bad, fmt.Sprintf("min runs %d below 2", o.MinRuns))
	}
	if !(o.MaxFailedFraction >= 0 && o.MaxFailedFraction < 1) {
		bad = append(bad, fmt.Sprintf("max failed fraction %v not in [0, 1)", o.MaxFailedFraction))
	}
	if !(o.Level > 0 && o.Level < 1) {
		bad = append(bad, fmt.Sprintf("level %v not in (0, 1)", o.Level))
	}
	if len(bad) > 0 {
		return o, fmt.Errorf("%w: verdict options: %s", ErrStatsBadArgument, strings.Join(bad, "; "))
	}
	return o, nil
}

// statsVerdictSide is one side's runs after sorting: the valid ones with
// their input positions, and counts of the others.
type statsVerdictSide struct {
	valid   []statsIndexedRun
	failed  int // failed + invalid
	errored int
}

type statsIndexedRun struct {
	index int
	run   VerdictRun
}

// statsSortVerdictRuns applies DecideVerdict's counting rules to one side,
// appending the runs not counted (or counted as failed) to v's lists.
func statsSortVerdictRuns(side string, runs []VerdictRun, v *Verdict) (statsVerdictSide, error) {
	var s statsVerdictSide
	seen := make(map[int64]int) // seed → index of the run that claimed it
	for i, r := range runs {
		note := VerdictRunNote{Side: side, Index: i, RunID: r.RunID, Seed: r.Seed, Status: r.Status}
		switch r.Status {
		case VerdictRunOK, VerdictRunFailed, VerdictRunError:
		default:
			return s, fmt.Errorf("%w: %s run %d (%s): unknown status %q (want ok, failed or error)", ErrStatsBadArgument, side, i, r.RunID, r.Status)
		}
		if r.Status == VerdictRunError {
			note.Reason = "infrastructure error: not counted, not held against the claim"
			v.Errored = append(v.Errored, note)
			s.errored++
			continue
		}
		if first, dup := seen[r.Seed]; dup {
			note.Reason = fmt.Sprintf("seed %d already counted for %s run %d; same-seed repeats are not independent", r.Seed, side, first)
			v.DuplicateSeeds = append(v.DuplicateSeeds, note)
			continue
		}
		seen[r.Seed] = i
		if r.Status == VerdictRunFailed {
			note.Reason = "failed: counted against the claim"
			if side == "baseline" {
				note.Reason = "failed: left out"
			}
			v.Failed = append(v.Failed, note)
			s.failed++
			continue
		}
		var bad []string
		if !statsFinite(r.ValLoss) || r.ValLoss < 0 {
			bad = append(bad, fmt.Sprintf("val loss %v", r.ValLoss))
		}
		if !statsFinite(r.TrainTimeMs) || r.TrainTimeMs <= 0 {
			bad = append(bad, fmt.Sprintf("train time %v ms", r.TrainTimeMs))
		}
		if len(bad) > 0 {
			note.Reason = "unusable " + strings.Join(bad, " and ") + ": treated as failed"
			v.Invalid = append(v.Invalid, note)
			s.failed++
			continue
		}
		s.valid = append(s.valid, statsIndexedRun{index: i, run: r})
	}
	return s, nil
}

func statsVerdictValues(runs []statsIndexedRun, f func(VerdictRun) float64) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = f(r.run)
	}
	return out
}

func statsVerdictLoss(losses []float64, o VerdictOptions) (*VerdictLoss, error) {
	sum, err := MeanCI(losses, o.Level)
	if err != nil {
		return nil, err
	}
	t, err := OneSampleTTestLess(losses, o.TargetLoss)
	if err != nil {
		return nil, err
	}
	return &VerdictLoss{Summary: sum, Test: t, PGreater: t.PFor(TTestGreater)}, nil
}

// statsVerdictTimes summarises times, or returns nil below 2 values.
func statsVerdictTimes(ms []float64, level float64) (*VerdictTimes, error) {
	if len(ms) < 2 {
		return nil, nil
	}
	sum, err := MeanCI(ms, level)
	if err != nil {
		return nil, err
	}
	t := &VerdictTimes{Summary: sum}
	if len(ms) >= 3 {
		om, err := OlympicMean(ms)
		if err != nil {
			return nil, err
		}
		t.OlympicMeanMs = &om
	}
	return t, nil
}

// statsVerdictPairs matches valid candidate and baseline runs by Pair number,
// in increasing Pair order, and says which pairs it could not use.
func statsVerdictPairs(cand, base []statsIndexedRun) (candMs, baseMs []float64, notes []string) {
	index := func(side string, runs []statsIndexedRun) map[int]VerdictRun {
		m := make(map[int]VerdictRun)
		for _, r := range runs {
			if r.run.Pair <= 0 {
				continue
			}
			if _, dup := m[r.run.Pair]; dup {
				notes = append(notes, fmt.Sprintf("pair %d: more than one valid %s run; the later ones are not used in the paired test", r.run.Pair, side))
				continue
			}
			m[r.run.Pair] = r.run
		}
		return m
	}
	cm, bm := index("candidate", cand), index("baseline", base)
	var keys []int
	for k := range cm {
		keys = append(keys, k)
	}
	for k := range bm {
		if _, ok := cm[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var single []string
	for _, k := range keys {
		c, okc := cm[k]
		b, okb := bm[k]
		switch {
		case !okc || !okb:
			single = append(single, fmt.Sprint(k))
		case c.Worker != "" && b.Worker != "" && c.Worker != b.Worker:
			notes = append(notes, fmt.Sprintf("pair %d not used: candidate ran on %q, baseline on %q", k, c.Worker, b.Worker))
		default:
			candMs = append(candMs, c.TrainTimeMs)
			baseMs = append(baseMs, b.TrainTimeMs)
		}
	}
	if n := len(single); n > 0 {
		const show = 20
		list := strings.Join(single[:min(n, show)], ", ")
		if n > show {
			list += fmt.Sprintf(" and %d more", n-show)
		}
		notes = append(notes, fmt.Sprintf("pairs %s have a valid run on one side only; not used in the paired test", list))
	}
	return candMs, baseMs, notes
}

// statsFmtP formats the p-value p of a test like r for a reason, saying so
// when it comes from zero variance.
func statsFmtP(r TTestResult, p float64) string {
	if r.ZeroVariance {
		return fmt.Sprintf("p=%.3g (zero variance: every value equal, p taken as 0, 1/2 or 1 by the sign)", p)
	}
	return fmt.Sprintf("p=%.3g", p)
}

// statsSpeedRunsToSettle estimates the pairs (paired) or runs per side
// (Welch) at which the observed speed difference would be significant, or 0.
func statsSpeedRunsToSettle(v Verdict, e *SpeedupEstimate, alpha float64) int {
	if e.Test.StdErr <= 0 {
		return 0
	}
	if v.SpeedTest == VerdictSpeedPaired {
		sd := e.Test.StdErr * math.Sqrt(float64(e.Test.N))
		return statsRunsToSettle(e.SavedMs, alpha, e.Test.N, func(n float64) (float64, float64) {
			return sd / math.Sqrt(n), n - 1
		})
	}
	if v.CandidateTime == nil || v.BaselineTime == nil {
		return 0
	}
	sa, sb := v.BaselineTime.Summary.StdDev, v.CandidateTime.Summary.StdDev
	return statsRunsToSettle(e.SavedMs, alpha, max(e.Test.N, e.Test.N2), func(n float64) (float64, float64) {
		qa, qb := sa*sa/n, sb*sb/n
		return math.Sqrt(qa + qb), (qa + qb) * (qa + qb) / ((qa*qa + qb*qb) / (n - 1))
	})
}

// statsRunsToSettle returns the smallest n > from (up to 100000) at which an
// observed effect > 0 with the standard error and degrees of freedom se(n)
// would give a one-sided p below alpha, or 0 when there is none.
func statsRunsToSettle(effect, alpha float64, from int, se func(n float64) (stdErr, df float64)) int {
	if !(effect > 0) {
		return 0
	}
	const limit = 100000
	ok := func(n int) bool {
		s, df := se(float64(n))
		return s > 0 && statsTTestP(effect/s, df, TTestGreater) < alpha
	}
	lo, hi := from, from+1
	for !ok(hi) { // the p-value falls as n grows: double, then bisect
		if hi >= limit {
			return 0
		}
		lo, hi = hi, min(2*hi, limit)
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if ok(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}
