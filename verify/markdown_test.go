package verify

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/store"
)

// checkMarkdown fails on what a rendered report must never contain.
func checkMarkdown(t *testing.T, md string, want ...string) {
	t.Helper()
	for _, bad := range []string{"NaN", "%!", "<nil>", "Inf"} {
		if strings.Contains(md, bad) {
			t.Errorf("markdown contains %q:\n%s", bad, md)
		}
	}
	for _, w := range want {
		if !strings.Contains(md, w) {
			t.Errorf("markdown does not contain %q:\n%s", w, md)
		}
	}
}

func TestVerificationMarkdown(t *testing.T) {
	c := store.Campaign{ID: "v-123", TeamName: "alpha", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	spec := verifSpec(5)
	spec.Candidate = SideSpec{Source: "files", Environment: "torch-2.5", Command: []string{"torchrun", "train_gpt.py"},
		Files: []archive.File{{Path: "train_gpt.py", SHA256: "c0ffee", Size: 10}}}
	spec.Baseline = SideSpec{Source: "task", Record: 3, Environment: "torch-2.5", Command: []string{"torchrun", "train_gpt.py"}}

	failedRuns := abRuns(highLoss, fastMs, baseLoss, baseMs)
	failedRuns[2].State, failedRuns[2].ExitCode, failedRuns[2].Metrics, failedRuns[2].Reason = store.Failed, intp(1), nil, "exit 1 | OOM?"
	errRun := vrun("cand-2-error", cand(2), store.Error, 102)
	errRun.Reason = "docker daemon gone"
	failedRuns = append(failedRuns, errRun)

	for _, tt := range []struct {
		name    string
		runs    []store.Run
		verdict string
		extra   []string
	}{
		{"verified", abRuns(fastLoss, fastMs, baseLoss, baseMs), "VERIFIED", []string{"(decides)", "olympic mean"}},
		{"rejected with failures", failedRuns, "REJECTED", []string{"Runs not counted as valid", "exit 1 \\| OOM?", "docker daemon gone", "—"}},
		{"inconclusive, one pair", abRuns(fastLoss[:1], fastMs[:1], baseLoss[:1], baseMs[:1]), "INCONCLUSIVE", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := judge(spec, tt.runs)
			if err != nil {
				t.Fatal(err)
			}
			rep := newVerificationReport(c, spec, tt.runs, v, "v0.1")
			if len(rep.RunList) != len(tt.runs) || rep.Workers["node-1"] == 0 || rep.Team != "alpha" || rep.TargetLoss != 3.28 {
				t.Errorf("report = %+v", rep)
			}
			md := rep.Markdown()
			want := append([]string{"# Verification v-123: " + tt.verdict, "- Team: alpha", "target val loss 3.28", "train_gpt.py (sha256 c0ffee)",
				"the task's start script (record 3)", "`torchrun train_gpt.py` in torch-2.5", "2026-01-02 03:04:05Z", "repro v0.1"}, tt.extra...)
			for _, r := range tt.runs {
				want = append(want, "| "+r.ID+" |")
			}
			for _, reason := range v.Reasons {
				want = append(want, reason)
			}
			if v.Loss != nil {
				want = append(want, pValue(v.Loss.Test.P), "one-sided t-test")
			}
			if v.Paired != nil {
				want = append(want, "speedup, paired t-test", pValue(v.Paired.Test.P))
			}
			if v.Welch != nil {
				want = append(want, "speedup, welch t-test", pValue(v.Welch.Test.P))
			}
			checkMarkdown(t, md, want...)
		})
	}

	t.Run("empty", func(t *testing.T) {
		checkMarkdown(t, VerificationReport{}.Markdown(), "# Verification : ", "## Runs")
		rep := VerificationReport{RunList: []ReportRun{{RunID: "r-no-metrics", State: "queued"}}}
		checkMarkdown(t, rep.Markdown(), "| r-no-metrics |", "— | — |")
	})
}

func TestPValue(t *testing.T) {
	for _, tt := range []struct {
		p    float64
		want string
	}{
		{math.NaN(), "n/a"}, {0, "0"}, {1e-7, "1e-07"}, {0.00012, "0.0001"}, {0.0123, "0.0123"}, {1, "1.0000"},
	} {
		if got := pValue(tt.p); got != tt.want {
			t.Errorf("pValue(%v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestAuditMarkdown(t *testing.T) {
	spec, final, orig, rer := build([]auditCase{
		{origState: store.Succeeded, origLoss: fp(3.279), origMs: fp(1000), rerunState: store.Succeeded, rerunLoss: fp(3.281), rerunMs: fp(1010),
			rerunFP: func(f *archive.Fingerprint) { f.Host = "node-2" }},
		{origState: store.Succeeded, origLoss: fp(3.278), origMs: fp(1010), rerunState: store.Succeeded, rerunLoss: fp(3.2795), rerunMs: fp(1030)},
	})
	runs := []store.Run{final[1], final[2]}
	c := store.Campaign{ID: "a-9", TeamName: "beta", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	rep := newAuditReport(c, spec, runs, "v0.2")
	rep.compare(spec, final, orig, rer)
	if rep.Outcome != Reproduced {
		t.Fatalf("outcome %s: %v", rep.Outcome, rep.Reasons)
	}
	checkMarkdown(t, rep.Markdown(), "# Audit a-9: REPRODUCED", "verification v1", "team beta", "±0.0060", "±10%",
		"o1 (team a, seed 7", "o2 (team a", "r1 (of original #1, seed 7)", "r2 (of original #2",
		"run o1: host: node-1 → node-2 (listed)", "mean train time", "paired t-test of the difference: p = ", "succeeded → succeeded",
		rep.Reasons[0])

	t.Run("drifted", func(t *testing.T) {
		spec, final, orig, rer := build([]auditCase{{origState: store.Succeeded, origLoss: fp(3.279), origMs: fp(1000), rerunState: store.Succeeded,
			rerunLoss: fp(3.30), rerunMs: fp(1000), rerunFP: func(f *archive.Fingerprint) { f.ScriptSHA256 = "s2" }}})
		rep := newAuditReport(c, spec, []store.Run{final[1]}, "v0.2")
		rep.compare(spec, final, orig, rer)
		checkMarkdown(t, rep.Markdown(), "# Audit a-9: DRIFTED", "script_sha256: s1 → s2 (significant)", "final val loss 3.2790, re-run 3.3000", "| false |")
	})

	t.Run("refused", func(t *testing.T) {
		rep := newAuditReport(c, spec, nil, "v0.2")
		rep.Outcome, rep.Refused, rep.Reasons = Drifted, true, []string{"run o1: its archived bundle no longer matches its manifest"}
		md := rep.Markdown()
		checkMarkdown(t, md, "DRIFTED", "nothing was re-run", "no longer matches", "None.")
		if strings.Contains(md, "## Re-runs") || strings.Contains(md, "## Comparisons") {
			t.Errorf("a refused audit shows re-runs or comparisons:\n%s", md)
		}
	})

	t.Run("empty pieces", func(t *testing.T) {
		checkMarkdown(t, AuditReport{}.Markdown(), "# Audit : ", "None.")
		rep := AuditReport{Audit: "a", Outcome: Drifted, Originals: []AuditOriginal{{RunID: "o-no-seed", State: "failed"}},
			Reruns:      []ReportRun{{RunID: "r-x", Pair: 1, State: "failed", Reason: "exit 1"}},
			Comparisons: []Comparison{{RunID: "o-no-seed", RerunID: "r-x", What: "final val loss", Original: fp(3.28), Detail: "the re-run reported no final val loss"}}}
		checkMarkdown(t, rep.Markdown(), "o-no-seed (team , seed none", "r-x (of original #1, seed 0): failed: exit 1", "| 3.28 | — | — | — | false |")
	})
}
