package pages

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Hostile is put into every user-controlled string of the fixtures.
const hostile = `<script>alert(1)</script>"><svg onload=alert(2)>`

func f64(v float64) *float64 { return &v }
func iptr(v int) *int        { return &v }

var (
	t0   = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)
	t1   = t0.Add(2 * time.Minute)
	t2   = t0.Add(5*time.Minute + 17*time.Second)
	page = func(title string) Page { return Page{Title: title, Version: "v0.9.1", Generated: t2} }
)

// curve is a plausible speedrun val-loss curve: 3.28 reached at the last step.
func speedrunCurve(steps, every int, final float64, withTrain bool) []CurvePoint {
	var pts []CurvePoint
	for s := 0; s <= steps; s += every {
		x := float64(s) / float64(steps)
		v := final + (10.83-final)*math.Exp(-7*x) - 0.35*x*math.Exp(-7*x)
		p := CurvePoint{Step: s, ValLoss: f64(v)}
		if withTrain && s > 0 {
			p.TrainLoss = f64(v + 0.05 + 0.04*math.Sin(float64(s)))
		}
		pts = append(pts, p)
	}
	return pts
}

func runView(team string) RunView {
	return RunView{
		Page:             page(""),
		ID:               "run-7f3a9c2e",
		Team:             team,
		State:            "failed",
		Reason:           "missed the target: final val loss 3.2912 > 3.28 " + team,
		Task:             "speedrun-11",
		TaskHref:         "/ui/tasks/speedrun-11",
		Environment:      "torch-2.7-cu128",
		Command:          []string{"torchrun", "--nproc_per_node=8", "train_gpt.py", "--name", team},
		Seed:             1337,
		ImageID:          "sha256:4b1e0a9c77d2e5f1c3a2b8d9e6f70123456789abcdef0123456789abcdef0123",
		CreatedAt:        &t0,
		StartedAt:        &t1,
		FinishedAt:       &t2,
		ExitCode:         iptr(0),
		FinalValLoss:     f64(3.2912),
		TrainTimeMs:      f64(179_312),
		Steps:            iptr(1750),
		Curve:            speedrunCurve(1750, 125, 3.2912, true),
		TargetValLoss:    f64(3.28),
		Score:            &Score{Valid: false, FSR: 0, Reason: "target missed " + team},
		Purpose:          "verification",
		VerificationID:   "ver-12ab",
		VerificationHref: "/ui/verifications/ver-12ab",
		LogTail:          "step:1625/1750 val_loss:3.3001 train_time:166511ms\n\x1b[31mwarn\x1b[0m " + team + "\nstep:1750/1750 val_loss:3.2912 train_time:179312ms step_avg:102.46ms\r\n",
		LogTruncated:     true,
		LogHref:          "/api/v1/runs/run-7f3a9c2e/log",
		Files: []FileRow{
			{Path: "submission/train_gpt.py", Size: 24_311, SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Href: "/api/v1/runs/run-7f3a9c2e/files/submission/train_gpt.py"},
			{Path: "artifacts/" + team, Size: 3 << 30, SHA256: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"},
		},
		BundleLocation: "s3://repro-runs/runs/run-7f3a9c2e/",
		ManifestSHA256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
	}
}

func verificationView(team string) VerificationView {
	cand := []float64{179_312, 178_940, 180_105, 179_550, 178_702, 179_881, 180_420, 179_013}
	base := []float64{182_950, 183_410, 182_620, 184_005, 183_180, 182_770, 183_660, 183_300}
	v := VerificationView{
		Page:               page(""),
		ID:                 "ver-12ab",
		Team:               team,
		Task:               "speedrun-11",
		Profile:            "8xH100",
		State:              "succeeded",
		Progress:           Progress{Done: 18, Total: 18},
		Verdict:            "verified",
		Reasons:            []string{"mean val loss 3.2781 ≤ 3.28 with p = 0.0042 < 0.01", "candidate faster than baseline: ×1.021 " + team},
		TargetLoss:         3.28,
		Alpha:              0.01,
		PValue:             f64(0.0042),
		MeanLoss:           f64(3.2781),
		LossCILow:          f64(3.2772),
		LossCIHigh:         f64(3.2790),
		Candidate:          SideSummary{N: 8, MeanMs: f64(179_490), CILowMs: f64(178_980), CIHighMs: f64(180_000), OlympicMeanMs: f64(179_470), TimesMs: cand},
		Baseline:           SideSummary{N: 8, MeanMs: f64(183_237), CILowMs: f64(182_840), CIHighMs: f64(183_630), OlympicMeanMs: f64(183_200), TimesMs: base},
		Speedup:            SpeedupInfo{Test: "paired", Speedup: f64(1.0209), CILow: f64(1.0170), CIHigh: f64(1.0248), PValue: f64(3.1e-6)},
		ReportJSONHref:     "/api/v1/verifications/ver-12ab/report.json",
		ReportMarkdownHref: "/api/v1/verifications/ver-12ab/report.md",
		CreatedAt:          &t0,
		FinishedAt:         &t2,
	}
	for i := range cand {
		v.Runs = append(v.Runs,
			VerificationRunRow{Pair: i + 1, Side: "candidate", RunID: fmt.Sprintf("run-c%02d", i), Href: fmt.Sprintf("/ui/runs/run-c%02d", i), Seed: int64(i), State: "succeeded", ValLoss: f64(3.2781 + 0.001*float64(i%3-1)), TrainTimeMs: f64(cand[i])},
			VerificationRunRow{Pair: i + 1, Side: "baseline", RunID: fmt.Sprintf("run-b%02d", i), Href: fmt.Sprintf("/ui/runs/run-b%02d", i), Seed: int64(i), State: "succeeded", ValLoss: f64(3.2790), TrainTimeMs: f64(base[i])})
	}
	v.Runs = append(v.Runs,
		VerificationRunRow{Pair: 9, Side: "candidate", RunID: "run-c08", Seed: 8, State: "failed", Note: "OOM-killed " + team},
		VerificationRunRow{Pair: 9, Side: "baseline", RunID: "run-b08", Seed: 8, State: "error", Note: "GPU lost; re-queued"})
	return v
}

func auditView(team string) AuditView {
	return AuditView{
		Page:    page(""),
		ID:      "aud-5e6f",
		Subject: Subject{Kind: "run", ID: "run-7f3a9c2e", Href: "/ui/runs/run-7f3a9c2e"},
		State:   "succeeded",
		Verdict: "drifted",
		Reasons: []string{"train time 4.1% slower than the original (tolerance 3%) " + team},
		Comparisons: []AuditRow{
			{What: "final val loss", Original: "3.2781", Rerun: "3.2784", Delta: "+0.0003", Tolerance: "±0.005", OK: true},
			{What: "train time " + team, Original: "179.3 s", Rerun: "186.7 s", Delta: "+4.1%", Tolerance: "±3%", OK: false},
		},
		FingerprintDiffs: []FingerprintDiff{
			{Field: "driver version", Original: "570.86.15", Rerun: "575.51.03", Significant: true},
			{Field: "host", Original: "gpu-node-3", Rerun: team, Significant: false},
		},
		Runs:           []AuditRunRow{{Seed: 1337, OriginalRunID: "run-7f3a9c2e", OriginalHref: "/ui/runs/run-7f3a9c2e", RerunRunID: "run-9d0e1f2a", RerunHref: "/ui/runs/run-9d0e1f2a", RerunState: "succeeded"}},
		OriginalCurve:  speedrunCurve(1750, 125, 3.2781, false),
		RerunCurve:     speedrunCurve(1750, 125, 3.2784, false),
		TargetValLoss:  f64(3.28),
		ReportJSONHref: "/api/v1/audits/aud-5e6f/report.json",
		CreatedAt:      &t0,
		FinishedAt:     &t2,
	}
}

func leaderboardView(team string) LeaderboardView {
	return LeaderboardView{
		Page: page(""),
		Task: TaskInfo{ID: "speedrun-11", Change: "Reproduce record 12: U-net pattern skip connections and doubled learning rate " + team, TargetValLoss: 3.28, Profile: "8xH100"},
		Records: []RecordRow{
			{Rank: 1, Team: team, MeanTimeMs: 179_490, CILowMs: 178_980, CIHighMs: 180_000, PValue: 0.0042, Runs: 8, Date: t2, VerificationHref: "/ui/verifications/ver-12ab"},
			{Rank: 2, Team: "modded-nanogpt", MeanTimeMs: 183_237, CILowMs: 182_840, CIHighMs: 183_630, PValue: 0.0007, Runs: 10, Date: t0, VerificationHref: "/ui/verifications/ver-0001"},
			{Rank: 3, Team: "a team with a really rather long name indeed", MeanTimeMs: 191_020, CILowMs: 189_500, CIHighMs: 192_540, PValue: 0.0081, Runs: 6, Date: t0},
		},
		Scores: []ScoreRow{
			{Rank: 1, Team: team, BestFSR: 0.912, Runs: 4, BestRunHref: "/ui/runs/run-7f3a9c2e", Date: t2},
			{Rank: 2, Team: "agent-o", BestFSR: 0.455, Runs: 11, Date: t0},
		},
	}
}

func indexView(team string) IndexView {
	return IndexView{
		Page: page(""),
		Tasks: []TaskRow{
			{ID: "speedrun-11", Description: "U-net skip connections " + team, Href: "/ui/tasks/speedrun-11", Records: 3, BestTimeMs: f64(179_490), TargetValLoss: f64(3.28)},
			{ID: "cpu-tiny", Description: "CPU smoke task", Href: "/ui/tasks/cpu-tiny"},
		},
		Verifications: []VerificationSummary{
			{ID: "ver-12ab", Href: "/ui/verifications/ver-12ab", Team: team, Task: "speedrun-11", State: "succeeded", Verdict: "verified", CreatedAt: t0},
			{ID: "ver-77aa", Href: "/ui/verifications/ver-77aa", Team: "agent-o", Task: "speedrun-11", State: "running", CreatedAt: t1},
		},
		Audits: []AuditSummary{
			{ID: "aud-5e6f", Href: "/ui/audits/aud-5e6f", SubjectKind: "run", SubjectID: "run-7f3a9c2e", State: "succeeded", Verdict: "drifted", CreatedAt: t2},
		},
	}
}

// render renders one named page of the fixtures.
func renderPage(name, team string) (string, error) {
	var b strings.Builder
	var err error
	switch name {
	case "run":
		err = Run(&b, runView(team))
	case "verification":
		err = Verification(&b, verificationView(team))
	case "audit":
		err = Audit(&b, auditView(team))
	case "leaderboard":
		err = Leaderboard(&b, leaderboardView(team))
	case "index":
		err = Index(&b, indexView(team))
	case "error":
		err = Error(&b, 404, "no run "+team)
	default:
		err = fmt.Errorf("no page %q", name)
	}
	return b.String(), err
}
