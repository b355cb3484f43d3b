package verify

import (
	"fmt"
	"math"
	"strings"

	"github.com/repro/repro/tasks"
)

// Markdown renders the report as a page a person reads next to the JSON.
func (r VerificationReport) Markdown() string {
	var b strings.Builder
	v := r.Verdict
	fmt.Fprintf(&b, "# Verification %s: %s\n\n", r.Verification, strings.ToUpper(string(v.Verdict)))
	fmt.Fprintf(&b, "- Task: %s, hardware profile %s, target val loss %g\n", r.Task, r.Profile, r.TargetLoss)
	fmt.Fprintf(&b, "- Team: %s\n", r.Team)
	fmt.Fprintf(&b, "- Candidate: %s\n- Baseline: %s\n", sideLine(r.Candidate), sideLine(r.Baseline))
	fmt.Fprintf(&b, "- Runs: %d per side; %s\n", r.Runs, r.Schedule)
	fmt.Fprintf(&b, "- Started %s, decided %s, repro %s\n\n", r.CreatedAt.Format("2006-01-02 15:04:05Z"), r.DecidedAt.Format("2006-01-02 15:04:05Z"), r.ReproVersion)
	b.WriteString("## Reasons\n\n")
	for _, reason := range v.Reasons {
		fmt.Fprintf(&b, "- %s\n", reason)
	}
	b.WriteString("\n## Statistics\n\n| | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| valid candidate runs | %d |\n| valid baseline runs | %d |\n| complete A/B pairs | %d |\n", v.N, v.BaselineN, v.Pairs)
	if v.Loss != nil {
		fmt.Fprintf(&b, "| mean final val loss | %.4f ± %.4f (%.0f%% CI %.4f – %.4f) |\n", v.Loss.Summary.Mean, v.Loss.Summary.StdDev,
			100*v.Loss.Summary.Level, v.Loss.Summary.Low, v.Loss.Summary.High)
		fmt.Fprintf(&b, "| p (mean loss < %g, one-sided t-test) | %s |\n", r.TargetLoss, pValue(v.Loss.Test.P))
	}
	for _, t := range []struct {
		name string
		t    *tasks.VerdictTimes
	}{{"candidate", v.CandidateTime}, {"baseline", v.BaselineTime}} {
		if t.t == nil {
			continue
		}
		fmt.Fprintf(&b, "| %s train time | %.0f ms (%.0f%% CI %.0f – %.0f)", t.name, t.t.Summary.Mean, 100*t.t.Summary.Level, t.t.Summary.Low, t.t.Summary.High)
		if t.t.OlympicMeanMs != nil {
			fmt.Fprintf(&b, "; olympic mean %.0f ms", *t.t.OlympicMeanMs)
		}
		b.WriteString(" |\n")
	}
	for _, e := range []struct {
		name string
		e    *tasks.SpeedupEstimate
	}{{"paired", v.Paired}, {"welch", v.Welch}} {
		if e.e == nil {
			continue
		}
		used := ""
		if e.name == v.SpeedTest {
			used = " (decides)"
		}
		fmt.Fprintf(&b, "| speedup, %s t-test%s | %.3f× (saved %.0f ms, %.0f%% CI %.0f – %.0f), p faster %s |\n", e.name, used, e.e.Ratio,
			e.e.SavedMs, 100*e.e.Level, e.e.SavedLowMs, e.e.SavedHighMs, pValue(e.e.Test.P))
	}
	b.WriteString("\n## Runs\n\n| pair | side | run | seed | state | val loss | train time | bundle |\n|---|---|---|---|---|---|---|---|\n")
	for _, run := range r.RunList {
		fmt.Fprintf(&b, "| %d | %s | %s | %d | %s | %s | %s | %s |\n", run.Pair, run.Side, run.RunID, run.Seed, stateCell(run.State, run.Reason),
			floatCell(run.ValLoss, "%.4f"), floatCell(run.TrainTimeMs, "%.0f ms"), run.Bundle)
	}
	notes := append(append(append(append([]tasks.VerdictRunNote{}, v.Failed...), v.Invalid...), v.Errored...), v.DuplicateSeeds...)
	if len(notes) > 0 {
		b.WriteString("\n## Runs not counted as valid\n\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s run %s (seed %d): %s — %s\n", n.Side, n.RunID, n.Seed, n.Status, n.Reason)
		}
	}
	return b.String()
}

func sideLine(s SideSpec) string {
	var what string
	switch s.Source {
	case "task":
		what = fmt.Sprintf("the task's start script (record %d)", s.Record)
	case "run":
		what = "the submission of run " + s.RunID
	default:
		what = "submitted files"
	}
	files := make([]string, 0, len(s.Files))
	for _, f := range s.Files {
		files = append(files, fmt.Sprintf("%s (sha256 %s)", f.Path, f.SHA256))
	}
	return fmt.Sprintf("%s: %s; `%s` in %s", what, strings.Join(files, ", "), strings.Join(s.Command, " "), s.Environment)
}

func pValue(p float64) string {
	if math.IsNaN(p) {
		return "n/a"
	}
	if p < 1e-4 {
		return fmt.Sprintf("%.2g", p)
	}
	return fmt.Sprintf("%.4f", p)
}

func floatCell(v *float64, format string) string {
	if v == nil {
		return "—"
	}
	return fmt.Sprintf(format, *v)
}

func stateCell(state, reason string) string {
	if reason == "" || state == "succeeded" {
		return state
	}
	return state + ": " + strings.ReplaceAll(reason, "|", "\\|")
}
