package pages

import (
	"encoding/xml"
	"errors"
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"testing"
	"time"
)

// element is one element of a parsed page or SVG.
type element struct {
	name  string
	attrs map[string]string
	path  []string // ancestors, outermost first
}

// parseXML parses s strictly as XML (the pages are written as polyglot markup, so a
// well-formed page parses) and returns its elements and text.
func parseXML(t *testing.T, s string) ([]element, string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(s))
	d.Strict = true
	var (
		els   []element
		stack []string
		text  strings.Builder
	)
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, excerpt(s, d.InputOffset()))
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			e := element{name: tk.Name.Local, attrs: map[string]string{}, path: append([]string(nil), stack...)}
			for _, a := range tk.Attr {
				e.attrs[a.Name.Local] = a.Value
			}
			els = append(els, e)
			stack = append(stack, tk.Name.Local)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			text.Write(tk)
		}
	}
	if len(stack) != 0 {
		t.Fatalf("unclosed elements %v", stack)
	}
	return els, text.String()
}

func excerpt(s string, off int64) string {
	lo, hi := int(off)-200, int(off)+200
	lo, hi = max(lo, 0), min(hi, len(s))
	return s[lo:hi]
}

// checkSafe asserts that a page has no script, no event handler, no external
// resource, and that the hostile strings survive only as text.
func checkSafe(t *testing.T, doc string, els []element, text string) {
	t.Helper()
	low := strings.ToLower(doc)
	for _, bad := range []string{"<script", "<svg onload", "<iframe", "<link", "<img", "javascript:", "http://", "https://", "zgotmplz"} {
		if strings.Contains(low, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	for _, e := range els {
		switch e.name {
		case "script", "iframe", "object", "embed", "link", "img", "image", "use", "foreignObject", "base":
			t.Errorf("page has a <%s> element", e.name)
		}
		for k, v := range e.attrs {
			lk := strings.ToLower(k)
			if strings.HasPrefix(lk, "on") || lk == "src" || lk == "srcset" || lk == "background" {
				t.Errorf("<%s> has attribute %s=%q", e.name, k, v)
			}
			if lk == "href" && (strings.Contains(v, ":") && !strings.HasPrefix(v, "/")) {
				t.Errorf("<%s> links outside: %q", e.name, v)
			}
		}
	}
}

func count(els []element, name string) int {
	n := 0
	for _, e := range els {
		if e.name == name {
			n++
		}
	}
	return n
}

func TestPagesRender(t *testing.T) {
	cases := []struct {
		page  string
		facts []string // in the page's text
		svgs  int
	}{
		{"run", []string{"run-7f3a9c2e", "failed", "3.2912", "179.3 s", "1750", "torchrun --nproc_per_node=8 train_gpt.py", "step:1750/1750", "submission/train_gpt.py", "3.0 GiB", "misses target 3.2800", "verification ver-12ab", "v0.9.1", "2026-03-14 09:32:10 UTC"}, 1},
		{"verification", []string{"ver-12ab", "verified", "paired", "×1.021", "0.0042", "179.5 s", "183.2 s", "run-c08", "OOM-killed", "GPU lost; re-queued", "error", "report.json", "report.md", "18 of 18"}, 1},
		{"audit", []string{"aud-5e6f", "drifted", "final val loss", "+4.1%", "driver version", "575.51.03", "significant", "expected", "run-9d0e1f2a"}, 1},
		{"leaderboard", []string{"speedrun-11", "U-net pattern", "≤ 3.2800", "179.5 s", "179.0 s – 180.0 s", "modded-nanogpt", "0.912", "agent-o", "8xH100"}, 1},
		{"index", []string{"speedrun-11", "cpu-tiny", "Recent verifications", "verified", "running", "drifted", "179.5 s"}, 0},
		{"error", []string{"404 Not Found", "no run "}, 0},
	}
	for _, c := range cases {
		t.Run(c.page, func(t *testing.T) {
			doc, err := renderPage(c.page, hostile)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(doc, "<!DOCTYPE html>") {
				t.Errorf("no doctype: %.40q", doc)
			}
			els, text := parseXML(t, doc)
			checkSafe(t, doc, els, text)
			for _, f := range c.facts {
				if !strings.Contains(text, f) {
					t.Errorf("page text lacks %q", f)
				}
			}
			// The hostile team name is shown, escaped, as text.
			if !strings.Contains(text, hostile) {
				t.Errorf("hostile string not shown as text")
			}
			if got := count(els, "svg"); got != c.svgs {
				t.Errorf("%d <svg>, want %d", got, c.svgs)
			}
			if count(els, "style") != 1 || count(els, "title") < 1 || count(els, "main") != 1 {
				t.Errorf("page lacks its <style>, <title> or <main>")
			}
		})
	}
}

func TestRunPageStates(t *testing.T) {
	t.Run("no curve", func(t *testing.T) {
		v := runView("team")
		v.Curve = []CurvePoint{{Step: 0, ValLoss: f64(math.NaN())}, {Step: 1, TrainLoss: f64(2)}}
		var b strings.Builder
		if err := Run(&b, v); err != nil {
			t.Fatal(err)
		}
		els, text := parseXML(t, b.String())
		if count(els, "svg") != 0 || !strings.Contains(text, "no val-loss points reported") {
			t.Errorf("want the empty-curve note and no plot")
		}
	})
	t.Run("minimal", func(t *testing.T) {
		var b strings.Builder
		if err := Run(&b, RunView{ID: "r1", State: "queued"}); err != nil {
			t.Fatal(err)
		}
		_, text := parseXML(t, b.String())
		for _, f := range []string{"queued", "no val-loss points reported", "no output", "not archived yet", "not scored"} {
			if !strings.Contains(text, f) {
				t.Errorf("lacks %q", f)
			}
		}
	})
	t.Run("log cleaned", func(t *testing.T) {
		v := RunView{ID: "r1", State: "running", LogTail: "a\x1b[1;32mgreen\x1b[0m\x00\x07b\rc\xff"}
		var b strings.Builder
		if err := Run(&b, v); err != nil {
			t.Fatal(err)
		}
		_, text := parseXML(t, b.String())
		if !strings.Contains(text, "agreenb\nc\uFFFD") {
			t.Errorf("log not cleaned: %q", text)
		}
	})
	t.Run("javascript href", func(t *testing.T) {
		v := RunView{ID: "r1", LogHref: "javascript:alert(1)", Files: []FileRow{{Path: "x", Href: "javascript:alert(2)"}}}
		var b strings.Builder
		if err := Run(&b, v); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(b.String(), "javascript:") {
			t.Errorf("javascript: URL survived")
		}
	})
}

func TestVerificationStates(t *testing.T) {
	for _, c := range []struct {
		verdict, state, class string
	}{
		{"verified", "succeeded", "badge ok"},
		{"rejected", "succeeded", "badge bad"},
		{"inconclusive", "succeeded", "badge warn"},
		{"", "running", "badge run"},
	} {
		t.Run(c.verdict+c.state, func(t *testing.T) {
			v := verificationView("team")
			v.Verdict, v.State = c.verdict, c.state
			var b strings.Builder
			if err := Verification(&b, v); err != nil {
				t.Fatal(err)
			}
			els, _ := parseXML(t, b.String())
			found := false
			for _, e := range els {
				if e.name == "span" && e.attrs["class"] == c.class && len(e.path) > 0 && e.path[len(e.path)-1] == "h1" {
					found = true
				}
			}
			if !found {
				t.Errorf("no %q badge in the heading", c.class)
			}
		})
	}
	t.Run("empty", func(t *testing.T) {
		var b strings.Builder
		if err := Verification(&b, VerificationView{ID: "v", State: "queued"}); err != nil {
			t.Fatal(err)
		}
		els, text := parseXML(t, b.String())
		if count(els, "svg") != 0 || !strings.Contains(text, "no timed runs yet") || !strings.Contains(text, "no runs yet") {
			t.Errorf("empty verification reads badly: %s", text)
		}
	})
}

func TestEmptyPages(t *testing.T) {
	for name, f := range map[string]func(io.Writer) error{
		"leaderboard": func(w io.Writer) error { return Leaderboard(w, LeaderboardView{Task: TaskInfo{ID: "t"}}) },
		"audit":       func(w io.Writer) error { return Audit(w, AuditView{ID: "a"}) },
		"index":       func(w io.Writer) error { return Index(w, IndexView{}) },
		"error":       func(w io.Writer) error { return Error(w, 599, "") },
	} {
		t.Run(name, func(t *testing.T) {
			var b strings.Builder
			if err := f(&b); err != nil {
				t.Fatal(err)
			}
			els, text := parseXML(t, b.String())
			checkSafe(t, b.String(), els, text)
			if name == "leaderboard" && !strings.Contains(text, "no verified records yet") {
				t.Errorf("no empty state: %s", text)
			}
		})
	}
}

// checkSVG parses one chart and checks the accessibility and safety basics.
func checkSVG(t *testing.T, h template.HTML) []element {
	t.Helper()
	s := string(h)
	els, _ := parseXML(t, s)
	if len(els) < 2 || els[0].name != "svg" || els[1].name != "title" {
		t.Fatalf("want <svg> with a first <title>: %.200s", s)
	}
	if els[0].attrs["role"] != "img" || els[0].attrs["aria-label"] == "" || els[0].attrs["viewBox"] == "" {
		t.Errorf("svg attributes: %v", els[0].attrs)
	}
	if count(els, "svg") != 1 {
		t.Errorf("nested <svg>")
	}
	for _, bad := range []string{"NaN", "Inf", "<script", "<svg onload"} {
		if strings.Contains(s, bad) {
			t.Errorf("svg contains %q", bad)
		}
	}
	for _, e := range els {
		for k, v := range e.attrs {
			if strings.HasPrefix(strings.ToLower(k), "on") {
				t.Errorf("event attribute %s=%q", k, v)
			}
		}
	}
	return els
}

func marks(els []element, name, class string) int {
	n := 0
	for _, e := range els {
		if e.name == name && strings.Contains(e.attrs["class"], class) {
			n++
		}
	}
	return n
}

func TestLineChart(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	cases := []struct {
		name    string
		series  []Series
		target  *TargetLine
		paths   int
		circles int
	}{
		{"empty", nil, nil, 0, 0},
		{"empty series", []Series{{Name: "val"}}, &TargetLine{Y: 3.28}, 0, 0},
		{"one point", []Series{{Name: "val", Points: []Point{{100, 3.3}}}}, &TargetLine{Y: 3.28}, 1, 1},
		{"nan and inf", []Series{{Name: "val", Points: []Point{{0, nan}, {1, 4}, {inf, 3}, {2, math.Inf(-1)}, {3, 3.5}, {nan, nan}}}}, &TargetLine{Y: nan}, 1, 2},
		{"all nan", []Series{{Name: "val", Points: []Point{{nan, nan}, {1, inf}}}}, nil, 0, 0},
		{"equal values", []Series{{Name: "flat", Points: []Point{{5, 3.28}, {5, 3.28}, {5, 3.28}}}}, &TargetLine{Y: 3.28}, 1, 3},
		{"zero everywhere", []Series{{Points: []Point{{0, 0}, {0, 0}}}}, nil, 1, 2},
		{"huge and tiny", []Series{{Name: "a", Points: []Point{{-1e300, 1e-300}, {1e300, -1e300}, {1, 2e-12}, {2, 3e-12}}}}, nil, 1, 2},
		{"large values", []Series{{Name: "ms", Points: []Point{{0, 179_312}, {1e6, 1.9e9}}}}, nil, 1, 2},
		{"two series", []Series{{Name: "val " + hostile, Points: []Point{{0, 10.8}, {125, 6}, {250, 4.2}}}, {Name: hostile, Points: []Point{{10, 9}, {20, 8}}}}, &TargetLine{Y: 3.28, Label: hostile}, 2, 5},
		{"unsorted", []Series{{Name: "u", Points: []Point{{3, 1}, {1, 2}, {2, 3}}}}, nil, 1, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := LineChart(LineChartData{Title: "Loss " + hostile, XLabel: "step " + hostile, YLabel: "loss " + hostile, Series: c.series, Target: c.target})
			els := checkSVG(t, h)
			if got := marks(els, "path", "mark"); got != c.paths {
				t.Errorf("%d series paths, want %d", got, c.paths)
			}
			if got := marks(els, "circle", ""); got != c.circles {
				t.Errorf("%d points, want %d", got, c.circles)
			}
			ticks := 0
			for _, e := range els {
				if e.name == "text" && e.attrs["class"] == "tick" {
					ticks++
				}
			}
			if ticks < 4 {
				t.Errorf("only %d tick labels", ticks)
			}
			if c.target != nil && !math.IsNaN(c.target.Y) && c.paths > 0 && marks(els, "line", "target") != 1 {
				t.Errorf("no target line")
			}
		})
	}
	t.Run("sorted path", func(t *testing.T) {
		h := string(LineChart(LineChartData{Series: []Series{{Points: []Point{{3, 1}, {1, 2}, {2, 3}}}}}))
		i := strings.Index(h, ` d="M`)
		d := h[i+5 : i+5+strings.Index(h[i+5:], `"`)]
		xs := []float64{}
		for _, seg := range strings.Split(d, "L") {
			var x, y float64
			if _, err := fmt.Sscan(strings.TrimSpace(seg), &x, &y); err != nil {
				t.Fatal(err)
			}
			xs = append(xs, x)
		}
		if !(xs[0] < xs[1] && xs[1] < xs[2]) {
			t.Errorf("path not sorted by x: %v", d)
		}
	})
}

func TestDistribution(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name  string
		sides []DistributionSide
		dots  int
	}{
		{"no sides", nil, 0},
		{"empty sides", []DistributionSide{{Label: "candidate"}, {Label: "baseline"}}, 0},
		{"one point", []DistributionSide{{Label: "candidate", Values: []float64{179.3}}}, 1},
		{"nan everywhere", []DistributionSide{{Label: "c", Values: []float64{nan, math.Inf(1), 180}, Mean: f64(nan), CILow: f64(math.Inf(-1)), CIHigh: f64(1)}, {Label: "b", Values: []float64{nan}}}, 1},
		{"equal values", []DistributionSide{{Label: "c", Values: []float64{180, 180, 180}, Mean: f64(180), CILow: f64(180), CIHigh: f64(180)}, {Label: "b", Values: []float64{180}}}, 4},
		{"hostile labels", []DistributionSide{{Label: hostile, Values: []float64{1, 2}}, {Label: hostile, Values: []float64{3}}}, 3},
		{"full", []DistributionSide{
			{Label: "candidate", Values: []float64{179.3, 178.9, 180.1, 179.5}, Mean: f64(179.45), CILow: f64(178.7), CIHigh: f64(180.2)},
			{Label: "baseline", Values: []float64{182.9, 183.4, 182.6}, Mean: f64(183), CILow: f64(182.3), CIHigh: f64(183.7)},
		}, 7},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := Distribution(DistributionData{Title: "Times " + hostile, XLabel: "train time (s) " + hostile, Sides: c.sides})
			els := checkSVG(t, h)
			if got := marks(els, "circle", ""); got != c.dots {
				t.Errorf("%d dots, want %d", got, c.dots)
			}
		})
	}
	t.Run("deterministic", func(t *testing.T) {
		d := DistributionData{Sides: []DistributionSide{{Label: "c", Values: []float64{1, 2, 3, 4, 5}}}}
		if Distribution(d) != Distribution(d) {
			t.Errorf("two renderings differ")
		}
	})
}

func TestBarChart(t *testing.T) {
	for _, c := range []struct {
		name string
		bars []Bar
		n    int
	}{
		{"empty", nil, 0},
		{"one", []Bar{{Label: hostile, Value: 179.5, Low: f64(179), High: f64(180)}}, 1},
		{"nan", []Bar{{Label: "a", Value: math.NaN()}, {Label: "b", Value: 3, Low: f64(math.Inf(1)), High: f64(4)}}, 1},
		{"zero", []Bar{{Label: "a", Value: 0}, {Label: "b", Value: 0}}, 2},
		{"negative", []Bar{{Label: "a", Value: -2}, {Label: "b", Value: 5}}, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			els := checkSVG(t, BarChart(BarChartData{Title: hostile, XLabel: hostile, Bars: c.bars, FromZero: true}))
			if got := marks(els, "rect", "bar"); got != c.n {
				t.Errorf("%d bars, want %d", got, c.n)
			}
			els = checkSVG(t, BarChart(BarChartData{Title: hostile, XLabel: hostile, Bars: c.bars}))
			if got := marks(els, "circle", "bar"); got != c.n {
				t.Errorf("%d dots, want %d", got, c.n)
			}
		})
	}
}

func TestNiceAxis(t *testing.T) {
	for _, c := range []struct {
		lo, hi         float64
		wantLo, wantHi float64
		first, last    string
	}{
		{3.27, 10.83, 2, 12, "2", "12"},
		{0, 1750, 0, 2000, "0", "2000"},
		{178.7, 183.7, 178, 184, "178", "184"},
		{3.28, 3.28, 3.1, 3.45, "3.10", "3.45"},
		{0, 0, -1, 1, "-1.0", "1.0"},
	} {
		a := niceAxis(c.lo, c.hi, 6)
		if a.lo > c.lo || a.hi < c.hi || len(a.ticks) < 3 || len(a.ticks) > 12 {
			t.Errorf("niceAxis(%v, %v) = [%v, %v] with %d ticks", c.lo, c.hi, a.lo, a.hi, len(a.ticks))
		}
		if got := a.label(a.ticks[0]); got != c.first {
			t.Errorf("niceAxis(%v, %v) first tick %q, want %q", c.lo, c.hi, got, c.first)
		}
		if got := a.label(a.ticks[len(a.ticks)-1]); got != c.last {
			t.Errorf("niceAxis(%v, %v) last tick %q, want %q", c.lo, c.hi, got, c.last)
		}
	}
}

func TestFormatters(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{fmtSecs(179_312.0), "179.3 s"},
		{fmtSecs(f64(45_123)), "45.12 s"},
		{fmtSecs(1234.0), "1.234 s"},
		{fmtSecs((*float64)(nil)), "—"},
		{fmtP(0.0042), "0.0042"},
		{fmtP(3.1e-6), "3.1e-06"},
		{fmtP(0.0007), "0.0007"},
		{fmtDate(t2), "2026-03-14 09:32"},
		{fmtBytes(3 << 30), "3.0 GiB"},
		{fmtBytes(512), "512 B"},
		{short("sha256:4b1e0a9c77d2e5f1c3a2"), "4b1e0a9c77d2"},
		{shellJoin([]string{"python", "-c", "print('hi')", "a b"}), `python -c 'print('\''hi'\'')' 'a b'`},
		{fmtTime(time.Time{}), "—"},
		{fmtDuration(&t1, &t2), "3m17s"},
		{badge("verified") + "|" + badge("rejected") + "|" + badge("inconclusive") + "|" + badge("running"), "badge ok|badge bad|badge warn|badge run"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
