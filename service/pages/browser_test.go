package pages

import (
	"bytes"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/repro/repro/internal/testenv"
)

// TestBrowserRendering serves each page over HTTP, screenshots it in headless
// chromium and checks, by counting pixels of the data-mark colours, that the plots
// really render; a control rendering of the same page without its plot proves the
// pixels come from the plot. Screenshots are copied to $REPRO_SCREENSHOT_DIR if set.
func TestBrowserRendering(t *testing.T) {
	chromium := testenv.Chromium(t)
	const team = "nanogpt-speedrunners"

	noCurveRun := runView(team)
	noCurveRun.Curve = nil
	noTimesVer := verificationView(team)
	noTimesVer.Candidate.TimesMs, noTimesVer.Baseline.TimesMs = nil, nil
	noCurveAudit := auditView(team)
	noCurveAudit.OriginalCurve, noCurveAudit.RerunCurve = nil, nil

	docs := map[string]func(io.Writer) error{
		"run":          func(w io.Writer) error { return Run(w, runView(team)) },
		"verification": func(w io.Writer) error { return Verification(w, verificationView(team)) },
		"audit":        func(w io.Writer) error { return Audit(w, auditView(team)) },
		"leaderboard":  func(w io.Writer) error { return Leaderboard(w, leaderboardView(team)) },
		"index":        func(w io.Writer) error { return Index(w, indexView(team)) },
		"error":        func(w io.Writer) error { return Error(w, 404, "no run named run-404") },
		"hostile":      func(w io.Writer) error { return Verification(w, verificationView(hostile)) },
		"run-control":  func(w io.Writer) error { return Run(w, noCurveRun) },
		"verification-control": func(w io.Writer) error {
			return Verification(w, noTimesVer)
		},
		"audit-control": func(w io.Writer) error { return Audit(w, noCurveAudit) },
	}
	rendered := map[string][]byte{}
	for name, f := range docs {
		var b bytes.Buffer
		if err := f(&b); err != nil {
			t.Fatal(err)
		}
		rendered["/"+name] = b.Bytes()
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, ok := rendered[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(doc)
	}))
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	keep := os.Getenv("REPRO_SCREENSHOT_DIR")
	shoot := func(t *testing.T, name string, height int) image.Image {
		out := filepath.Join(dir, name+".png")
		if err := testenv.Screenshot(t, chromium, srv.URL+"/"+name, out, 1280, height); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != height {
			t.Errorf("screenshot is %dx%d, want 1280x%d", b.Dx(), b.Dy(), height)
		}
		if keep != "" {
			if err := os.MkdirAll(keep, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(keep, name+".png"), raw, 0o644); err != nil {
				t.Fatal(err)
			}
			out = filepath.Join(keep, name+".png")
		}
		t.Logf("screenshot: %s", out)
		return img
	}

	blue, orange, red := testenv.HexColor(ColorSeries0), testenv.HexColor(ColorSeries1), testenv.HexColor(ColorCandidate)
	cases := []struct {
		page    string
		height  int
		colors  []testenv.RGB
		min     []int // pixels near each colour in the page
		control string
		maxCtl  []int // at most this many in the control page
	}{
		{"run", 1800, []testenv.RGB{blue, orange}, []int{600, 200}, "run-control", []int{60, 60}},
		{"verification", 2000, []testenv.RGB{red, blue}, []int{300, 300}, "verification-control", []int{60, 60}},
		{"audit", 1400, []testenv.RGB{blue, orange}, []int{250, 400}, "audit-control", []int{60, 60}},
		{"leaderboard", 1200, []testenv.RGB{blue}, []int{200}, "", nil},
		{"index", 900, nil, nil, "", nil},
		{"error", 600, nil, nil, "", nil},
	}
	for _, c := range cases {
		t.Run(c.page, func(t *testing.T) {
			t.Parallel()
			near, nonWhite := testenv.PixelStats(shoot(t, c.page, c.height), c.colors)
			t.Logf("%s: %d non-white pixels; near %v: %v", c.page, nonWhite, c.colors, near)
			minInk := 20_000
			if c.page == "error" {
				minInk = 3_000
			}
			if nonWhite < minInk {
				t.Errorf("page looks blank: %d non-white pixels", nonWhite)
			}
			for i, n := range near {
				if n < c.min[i] {
					t.Errorf("only %d pixels of %v: the plot did not render", n, c.colors[i])
				}
			}
			if c.control == "" {
				return
			}
			cnear, _ := testenv.PixelStats(shoot(t, c.control, c.height), c.colors)
			t.Logf("%s: near %v: %v", c.control, c.colors, cnear)
			for i, n := range cnear {
				if n > c.maxCtl[i] {
					t.Errorf("%d pixels of %v without the plot: the colour is not specific to the plot", n, c.colors[i])
				}
			}
		})
	}

	t.Run("dom", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			page string
			want []string
		}{
			{"verification", []string{"<svg", `role="img"`, "verified", "candidate", "baseline", team}},
			{"run", []string{"<svg", "failed", "3.2912"}},
			{"hostile", []string{"<svg", "&lt;script&gt;alert(1)&lt;/script&gt;"}},
		} {
			dom, err := testenv.DumpDOM(t, chromium, srv.URL+"/"+c.page)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(dom, w) {
					t.Errorf("%s: DOM lacks %q", c.page, w)
				}
			}
			low := strings.ToLower(dom)
			if strings.Contains(low, "<script") || strings.Contains(low, "<svg onload") {
				t.Errorf("%s: the DOM holds a script or handler", c.page)
			}
			if n := strings.Count(low, "<svg"); n != 1 {
				t.Errorf("%s: %d <svg> elements in the DOM, want the one plot", c.page, n)
			}
		}
	})
}
