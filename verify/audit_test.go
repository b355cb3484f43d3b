package verify

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

func rerun(id string, pair int, state store.State, seed int64) store.Run {
	return store.Run{ID: id, Side: SideRerun, Pair: pair, State: state, Spec: store.RunSpec{Seed: seedp(seed)}, Purpose: store.PurposeAudit}
}

func TestAuditPlan(t *testing.T) {
	spec := AuditSpec{Originals: []AuditOriginal{{RunID: "o1"}, {RunID: "o2"}, {RunID: "o3"}}}
	okRun := func(id string, pair int) store.Run {
		r := rerun(id, pair, store.Succeeded, 1)
		r.Metrics = metricsJSON(3.27, 1000)
		return r
	}
	tests := []struct {
		name   string
		runs   []store.Run
		wait   string
		create int
		done   int
	}{
		{"empty: first original", nil, "", 0, 0},
		{"waits for the re-run", []store.Run{rerun("r1", 1, store.Running, 1)}, "r1", -1, 0},
		{"then the second", []store.Run{okRun("r1", 1)}, "", 1, 1},
		{"a failed re-run is final", []store.Run{rerun("r1", 1, store.Failed, 1), okRun("r2", 2)}, "", 2, 2},
		{"error: tried again", []store.Run{okRun("r1", 1), rerun("r2", 2, store.Error, 1)}, "", 1, 1},
		{"error twice: tried again", []store.Run{okRun("r1", 1), rerun("r2", 2, store.Error, 1), rerun("r2b", 2, store.Error, 1)}, "", 1, 1},
		{"error three times: final", []store.Run{okRun("r1", 1), rerun("r2", 2, store.Error, 1), rerun("r2b", 2, store.Error, 1), rerun("r2c", 2, store.Error, 1)}, "", 2, 2},
		{"canceled by the system: tried again", []store.Run{canceled(rerun("r1", 1, store.Running, 1), false)}, "", 0, 0},
		{"canceled on request: final", []store.Run{canceled(rerun("r1", 1, store.Running, 1), true)}, "", 1, 1},
		{"waits for a retry", []store.Run{okRun("r1", 1), rerun("r2", 2, store.Error, 1), rerun("r2b", 2, store.Queued, 1)}, "r2b", -1, 1},
		{"all done", []store.Run{okRun("r1", 1), okRun("r2", 2), rerun("r3", 3, store.Failed, 1)}, "", -1, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := auditPlan(spec, tt.runs, 2)
			gotWait := ""
			if st.wait != nil {
				gotWait = st.wait.ID
			}
			if gotWait != tt.wait || st.create != tt.create || st.done != tt.done {
				t.Errorf("step = {wait %q create %d done %d}, want {wait %q create %d done %d}", gotWait, st.create, st.done, tt.wait, tt.create, tt.done)
			}
		})
	}
}

// baseFP is the fingerprint an original and a faithful re-run share.
var baseFP = archive.Fingerprint{
	ImageID: "sha256:" + strings.Repeat("ab", 32), ImageDigest: "repro/torch@sha256:1", Environment: "torch-2.5-cu124",
	ScriptSHA256: "s1", DatasetManifestSHA256: "d1", Seed: 7, GPUModels: []string{"NVIDIA H100 80GB HBM3"},
	GPUUUIDs: []string{"GPU-1"}, DriverVersion: "550.1", CUDAVersion: "12.4", Host: "node-1", ReproVersion: "v1",
}

func TestFingerprintDiffs(t *testing.T) {
	tests := []struct {
		field       string
		change      func(*archive.Fingerprint)
		significant bool
		orig, rerun string
	}{
		{"image_id", func(f *archive.Fingerprint) { f.ImageID = "sha256:other" }, true, baseFP.ImageID, "sha256:other"},
		{"environment", func(f *archive.Fingerprint) { f.Environment = "torch-2.6" }, true, "torch-2.5-cu124", "torch-2.6"},
		{"script_sha256", func(f *archive.Fingerprint) { f.ScriptSHA256 = "s2" }, true, "s1", "s2"},
		{"dataset_manifest_sha256", func(f *archive.Fingerprint) { f.DatasetManifestSHA256 = "" }, true, "d1", "(none)"},
		{"seed", func(f *archive.Fingerprint) { f.Seed = 0 }, true, "7", "0"},
		{"gpu_models", func(f *archive.Fingerprint) { f.GPUModels = []string{"NVIDIA A100"} }, true, "NVIDIA H100 80GB HBM3", "NVIDIA A100"},
		{"gpu_models", func(f *archive.Fingerprint) { f.GPUModels = append(f.GPUModels, "NVIDIA H100 80GB HBM3") }, true,
			"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3,NVIDIA H100 80GB HBM3"},
		{"image_digest", func(f *archive.Fingerprint) { f.ImageDigest = "" }, false, "repro/torch@sha256:1", "(none)"},
		{"driver_version", func(f *archive.Fingerprint) { f.DriverVersion = "560.2" }, false, "550.1", "560.2"},
		{"cuda_version", func(f *archive.Fingerprint) { f.CUDAVersion = "12.6" }, false, "12.4", "12.6"},
		{"gpu_uuids", func(f *archive.Fingerprint) { f.GPUUUIDs = []string{"GPU-2"} }, false, "GPU-1", "GPU-2"},
		{"host", func(f *archive.Fingerprint) { f.Host = "node-9" }, false, "node-1", "node-9"},
		{"repro_version", func(f *archive.Fingerprint) { f.ReproVersion = "v2" }, false, "v1", "v2"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			b := baseFP
			b.GPUModels, b.GPUUUIDs = slices.Clone(b.GPUModels), slices.Clone(b.GPUUUIDs)
			tt.change(&b)
			got := fingerprintDiffs("o1", baseFP, b)
			want := []FingerprintDiff{{RunID: "o1", Field: tt.field, Original: tt.orig, Rerun: tt.rerun, Significant: tt.significant}}
			if !slices.Equal(got, want) {
				t.Errorf("diffs = %+v, want %+v", got, want)
			}
		})
	}
	if got := fingerprintDiffs("o1", baseFP, baseFP); len(got) != 0 {
		t.Errorf("identical: %+v", got)
	}
	if got := fingerprintDiffs("o1", archive.Fingerprint{}, archive.Fingerprint{GPUUUIDs: []string{}}); len(got) != 0 {
		t.Errorf("nil and empty lists: %+v", got)
	}
	all := fingerprintDiffs("o1", baseFP, archive.Fingerprint{Seed: 8})
	if len(all) != 12 {
		t.Errorf("every field differs: %d diffs %+v", len(all), all)
	}
}

// auditCase is one original and its re-run.
type auditCase struct {
	origState  store.State
	origLoss   *float64
	origMs     *float64
	rerunState store.State
	rerunLoss  *float64
	rerunMs    *float64
	rerunFP    func(*archive.Fingerprint)
	noRerun    bool // the original was not re-run
	noBundle   bool // the re-run has no archived bundle
	oldSpec    bool // the spec predates AuditOriginal.Status
}

// build makes the spec and the inputs of compare for cases, original i being
// "o<i+1>" and its re-run "r<i+1>".
func build(cases []auditCase) (AuditSpec, map[int]store.Run, map[string]archive.Manifest, map[string]archive.Manifest) {
	spec := AuditSpec{SubjectKind: "run", SubjectID: "o1", Profile: "8xH100", LossTolerance: DefaultLossTolerance, TimeTolerance: DefaultTimeTolerance}
	if len(cases) > 1 {
		spec.SubjectKind, spec.SubjectID = "verification", "v1"
	}
	final := map[int]store.Run{}
	orig, rer := map[string]archive.Manifest{}, map[string]archive.Manifest{}
	for i, c := range cases {
		oid, rid := fmt.Sprint("o", i+1), fmt.Sprint("r", i+1)
		o := store.Run{ID: oid, State: c.origState, Spec: store.RunSpec{Seed: seedp(7)}, ExitCode: intp(0), ImageID: baseFP.ImageID}
		if c.origLoss != nil || c.origMs != nil {
			o.Metrics, _ = json.Marshal(tasks.Metrics{FinalValLoss: c.origLoss, TrainTimeMs: c.origMs})
		}
		ao := AuditOriginal{RunID: oid, Team: "a", Spec: o.Spec, ImageID: o.ImageID, ValLoss: c.origLoss, TrainTimeMs: c.origMs,
			State: string(c.origState), Status: verdictRun(o).Status, Bundle: "file:///x/runs/" + oid + "/", ManifestSHA256: "m"}
		if c.oldSpec {
			ao.Status = ""
		}
		spec.Originals = append(spec.Originals, ao)
		orig[oid] = archive.Manifest{RunID: oid, Environment: baseFP}
		if c.noRerun {
			continue
		}
		r := rerun(rid, i+1, c.rerunState, 7)
		r.ExitCode = intp(0)
		if c.rerunState == store.Failed && c.rerunLoss == nil {
			r.ExitCode = intp(1)
		}
		if c.rerunLoss != nil || c.rerunMs != nil {
			r.Metrics, _ = json.Marshal(tasks.Metrics{FinalValLoss: c.rerunLoss, TrainTimeMs: c.rerunMs})
		}
		if !c.noBundle {
			r.BundleLocation = "file:///x/runs/" + rid + "/"
			f := baseFP
			if c.rerunFP != nil {
				c.rerunFP(&f)
			}
			rer[rid] = archive.Manifest{RunID: rid, Environment: f}
		}
		final[i+1] = r
	}
	return spec, final, orig, rer
}

func TestAuditCompare(t *testing.T) {
	succ, failed := store.Succeeded, store.Failed
	good := func(loss, ms float64) auditCase {
		return auditCase{origState: succ, origLoss: fp(3.2790), origMs: fp(1000), rerunState: succ, rerunLoss: fp(loss), rerunMs: fp(ms)}
	}
	with := func(c auditCase, f func(*auditCase)) auditCase { f(&c); return c }
	tests := []struct {
		name    string
		cases   []auditCase
		outcome string
		reasons []string // each must appear in some reason
		notes   int      // insignificant fingerprint differences listed
	}{
		{"within tolerance", []auditCase{good(3.2810, 1050)}, Reproduced, []string{"within ±0.0060", "±10%"}, 0},
		{"identical", []auditCase{good(3.2790, 1000)}, Reproduced, nil, 0},
		{"loss at the tolerance", []auditCase{good(3.2790+0.0059, 1000)}, Reproduced, nil, 0},
		{"loss beyond the tolerance", []auditCase{good(3.2900, 1000)}, Drifted, []string{"final val loss 3.2790, re-run 3.2900", "> tolerance 0.0060"}, 0},
		{"loss beyond, below", []auditCase{good(3.2700, 1000)}, Drifted, []string{"3.2790", "3.2700"}, 0},
		{"time at the tolerance", []auditCase{good(3.2790, 1100)}, Reproduced, nil, 0},
		{"time beyond the tolerance", []auditCase{good(3.2790, 1150)}, Drifted, []string{"train time 1000 ms, re-run 1150 ms", "+15.0%"}, 0},
		{"faster beyond the tolerance", []auditCase{good(3.2790, 800)}, Drifted, []string{"-20.0%"}, 0},
		{"no loss in the re-run", []auditCase{with(good(0, 1000), func(c *auditCase) { c.rerunLoss, c.rerunState = nil, failed })}, Drifted,
			[]string{"reported no final val loss", "ended succeeded; its re-run r1 ended failed"}, 0},
		{"state differs", []auditCase{with(good(0, 0), func(c *auditCase) { c.rerunLoss, c.rerunMs, c.rerunState = nil, nil, store.Canceled })}, Drifted,
			[]string{"ended succeeded; its re-run r1 ended canceled"}, 0},
		{"failed original, canceled re-run", []auditCase{{origState: failed, rerunState: store.Canceled}}, Drifted, []string{"ended failed; its re-run r1 ended canceled"}, 0},
		{"failed original, failed re-run", []auditCase{{origState: failed, rerunState: failed}}, Reproduced, nil, 0},
		{"missed target by a hair, re-run reached it", []auditCase{with(good(3.2795, 1000), func(c *auditCase) { c.origState, c.origLoss = failed, fp(3.2805) })},
			Reproduced, nil, 0},
		{"old spec: states compared", []auditCase{with(good(3.2795, 1000), func(c *auditCase) { c.origState, c.origLoss, c.oldSpec = failed, fp(3.2805), true })},
			Drifted, []string{"ended failed; its re-run r1 ended succeeded"}, 0},
		{"not re-run", []auditCase{{origState: succ, origLoss: fp(3.279), noRerun: true}}, Drifted, []string{"run o1 was not re-run"}, 0},
		{"re-run without a bundle", []auditCase{with(good(3.2790, 1000), func(c *auditCase) { c.noBundle = true })}, Drifted,
			[]string{"re-run r1 has no archived bundle"}, 0},
	}
	for _, sig := range []struct {
		field string
		f     func(*archive.Fingerprint)
	}{
		{"image_id", func(f *archive.Fingerprint) { f.ImageID = "sha256:other" }},
		{"script_sha256", func(f *archive.Fingerprint) { f.ScriptSHA256 = "s2" }},
		{"dataset_manifest_sha256", func(f *archive.Fingerprint) { f.DatasetManifestSHA256 = "d2" }},
		{"seed", func(f *archive.Fingerprint) { f.Seed = 8 }},
		{"gpu_models", func(f *archive.Fingerprint) { f.GPUModels = []string{"NVIDIA A100"} }},
	} {
		tests = append(tests, struct {
			name    string
			cases   []auditCase
			outcome string
			reasons []string
			notes   int
		}{"significant " + sig.field, []auditCase{with(good(3.2790, 1000), func(c *auditCase) { c.rerunFP = sig.f })}, Drifted, []string{sig.field + " differs"}, 0})
	}
	for _, ins := range []struct {
		field string
		f     func(*archive.Fingerprint)
	}{
		{"host", func(f *archive.Fingerprint) { f.Host = "node-9" }},
		{"repro_version", func(f *archive.Fingerprint) { f.ReproVersion = "v2" }},
		{"driver_version", func(f *archive.Fingerprint) { f.DriverVersion = "560.2" }},
	} {
		tests = append(tests, struct {
			name    string
			cases   []auditCase
			outcome string
			reasons []string
			notes   int
		}{"insignificant " + ins.field, []auditCase{with(good(3.2790, 1000), func(c *auditCase) { c.rerunFP = ins.f })}, Reproduced,
			[]string{"note: run o1: " + ins.field + " differs"}, 1})
	}
	// A verification audit: three originals, times compared by their mean.
	three := func(ms ...float64) []auditCase {
		var cs []auditCase
		for i, m := range ms {
			cs = append(cs, good(3.2790+0.001*float64(i), m))
			cs[i].origLoss, cs[i].origMs = fp(3.2790+0.001*float64(i)), fp(1000+10*float64(i))
		}
		return cs
	}
	tests = append(tests, []struct {
		name    string
		cases   []auditCase
		outcome string
		reasons []string
		notes   int
	}{
		{"verification: mean time within", three(1020, 1030, 1040), Reproduced, []string{"3 run(s) re-run"}, 0},
		{"verification: one run slow, the mean within", three(1250, 900, 920), Reproduced, nil, 0},
		{"verification: mean time beyond", three(1200, 1210, 1220), Drifted, []string{"mean train time 1010 ms, re-runs 1210 ms", "+19.8%"}, 0},
		{"verification: one loss beyond", append(three(1000, 1010), with(good(3.3, 1020), func(c *auditCase) { c.origMs = fp(1020) })), Drifted,
			[]string{"run o3: final val loss 3.2790, re-run 3.3000"}, 0},
		{"verification: one not re-run", append(three(1000, 1010), auditCase{origState: succ, origLoss: fp(3.28), origMs: fp(1000), noRerun: true}), Drifted,
			[]string{"run o3 was not re-run"}, 0},
	}...)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, final, orig, rer := build(tt.cases)
			rep := newAuditReport(store.Campaign{ID: "a1", TeamName: "a"}, spec, nil, "test")
			rep.compare(spec, final, orig, rer)
			all := strings.Join(rep.Reasons, "\n")
			if rep.Outcome != tt.outcome {
				t.Errorf("outcome %s, want %s; reasons:\n%s", rep.Outcome, tt.outcome, all)
			}
			for _, want := range tt.reasons {
				if !strings.Contains(all, want) {
					t.Errorf("reasons do not say %q:\n%s", want, all)
				}
			}
			if len(rep.Reasons) == 0 {
				t.Error("no reasons")
			}
			notes := 0
			for _, d := range rep.Fingerprint {
				if !d.Significant {
					notes++
				}
			}
			if notes != tt.notes {
				t.Errorf("%d insignificant fingerprint differences, want %d: %+v", notes, tt.notes, rep.Fingerprint)
			}
			// Every comparison that failed is a reason to drift.
			for _, c := range rep.Comparisons {
				if !c.OK && rep.Outcome != Drifted {
					t.Errorf("comparison %+v failed, outcome %s", c, rep.Outcome)
				}
			}
			if _, err := json.Marshal(rep); err != nil {
				t.Errorf("report does not marshal: %v", err)
			}
			md := rep.Markdown()
			if !strings.Contains(md, strings.ToUpper(tt.outcome)) || strings.Contains(md, "NaN") || strings.Contains(md, "%!") {
				t.Errorf("markdown:\n%s", md)
			}
		})
	}

	t.Run("single run compares its own time", func(t *testing.T) {
		spec, final, orig, rer := build([]auditCase{good(3.2800, 1040)})
		var rep AuditReport
		rep.compare(spec, final, orig, rer)
		var whats []string
		for _, c := range rep.Comparisons {
			whats = append(whats, c.What)
			if c.What == "train time" && (c.Delta == nil || *c.Delta < 0.0399 || *c.Delta > 0.0401 || !c.OK) {
				t.Errorf("train time = %+v", c)
			}
			if c.What == "final val loss" && (c.Delta == nil || *c.Delta < 0.00099 || *c.Delta > 0.00101 || *c.Tolerance != DefaultLossTolerance) {
				t.Errorf("loss = %+v", c)
			}
		}
		if !slices.Equal(whats, []string{"state", "final val loss", "train time"}) {
			t.Errorf("comparisons = %v", whats)
		}
	})

	t.Run("verification uses the mean time and a paired t-test", func(t *testing.T) {
		spec, final, orig, rer := build(three(1020, 1030, 1040))
		var rep AuditReport
		rep.compare(spec, final, orig, rer)
		var mean *Comparison
		for i, c := range rep.Comparisons {
			if c.What == "train time" {
				t.Errorf("per-run time comparison in a verification audit: %+v", c)
			}
			if c.What == "mean train time" {
				mean = &rep.Comparisons[i]
			}
		}
		if mean == nil || *mean.Original != 1010 || *mean.Rerun != 1030 || !mean.OK || mean.RunID != "v1" ||
			!strings.Contains(mean.Detail, "over 3 runs") || !strings.Contains(mean.Detail, "paired t-test") {
			t.Fatalf("mean comparison = %+v", mean)
		}
		if !strings.Contains(rep.Markdown(), "paired t-test of the difference: p = ") {
			t.Errorf("the markdown does not show the t-test's p:\n%s", rep.Markdown())
		}
	})
}

func TestSameEnd(t *testing.T) {
	r := func(st store.State, loss bool, exit int) store.Run {
		x := store.Run{ID: "r", State: st, ExitCode: intp(exit)}
		if loss {
			x.Metrics = metricsJSON(3.28, 1000)
		}
		return x
	}
	o := func(st store.State, status tasks.VerdictRunStatus) AuditOriginal {
		return AuditOriginal{State: string(st), Status: status}
	}
	ok, failed := tasks.VerdictRunOK, tasks.VerdictRunFailed
	tests := []struct {
		name string
		o    AuditOriginal
		r    store.Run
		want bool
	}{
		{"succeeded both", o(store.Succeeded, ok), r(store.Succeeded, true, 0), true},
		{"missed target → succeeded", o(store.Failed, ok), r(store.Succeeded, true, 0), true},
		{"succeeded → missed target", o(store.Succeeded, ok), r(store.Failed, true, 0), true},
		{"succeeded → crashed after its last eval", o(store.Succeeded, ok), r(store.Failed, true, 1), false},
		{"crashed both", o(store.Failed, failed), r(store.Failed, false, 1), true},
		{"crashed → succeeded", o(store.Failed, failed), r(store.Succeeded, true, 0), false},
		{"succeeded → canceled", o(store.Succeeded, ok), r(store.Canceled, false, 0), false},
		{"old spec, equal states", o(store.Failed, ""), r(store.Failed, true, 0), true},
		{"old spec, other states", o(store.Failed, ""), r(store.Succeeded, true, 0), false},
		{"old spec, failed → canceled", o(store.Failed, ""), r(store.Canceled, false, 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, detail := sameEnd(tt.o, tt.r)
			if got != tt.want {
				t.Errorf("sameEnd = %v (%s), want %v", got, detail, tt.want)
			}
			if !strings.Contains(detail, tt.o.State) || !strings.Contains(detail, string(tt.r.State)) {
				t.Errorf("detail %q does not name both states", detail)
			}
		})
	}
}
