// Package pages renders repro's HTML pages: the index, a task's leaderboard, a run, a
// verification and an audit. Pages are whole, self-contained documents: one inline
// stylesheet, inline SVG plots, no JavaScript and no external asset. Every string from
// a view is escaped by html/template (or, inside the SVG, by this package), so view
// data can never inject markup.
package pages

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Version is shown in the footer of pages whose view leaves Page.Version empty (the
// error pages, for one); the service sets it once at start-up.
var Version string

//go:embed templates/*.html style.css
var files embed.FS

var style = func() string {
	b, err := files.ReadFile("style.css")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

var (
	tLeaderboard  = parse("leaderboard.html")
	tRun          = parse("run.html")
	tVerification = parse("verification.html")
	tAudit        = parse("audit.html")
	tIndex        = parse("index.html")
	tError        = parse("error.html")
)

func parse(page string) *template.Template {
	return template.Must(template.New(page).Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/"+page))
}

func render(w io.Writer, t *template.Template, data any) error {
	var buf bytes.Buffer // never write half a page
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		return fmt.Errorf("render %s: %w", t.Name(), err)
	}
	_, err := buf.WriteTo(w)
	return err
}

// Leaderboard writes the leaderboard page of one task.
func Leaderboard(w io.Writer, v LeaderboardView) error {
	if v.Title == "" {
		v.Title = "Leaderboard · " + v.Task.ID
	}
	var chart template.HTML
	if len(v.Records) > 0 {
		d := BarChartData{Title: "Mean train time of the verified records, with 95% CI", XLabel: "mean train time (s), 95% CI"}
		for _, r := range v.Records {
			lo, hi := r.CILowMs/1000, r.CIHighMs/1000
			d.Bars = append(d.Bars, Bar{Label: strconv.Itoa(r.Rank) + ". " + r.Team, Value: r.MeanTimeMs / 1000, Low: &lo, High: &hi})
		}
		chart = BarChart(d)
	}
	return render(w, tLeaderboard, struct {
		LeaderboardView
		Chart template.HTML
	}{v, chart})
}

// Run writes the page of one run.
func Run(w io.Writer, v RunView) error {
	if v.Title == "" {
		v.Title = "Run " + v.ID
	}
	v.LogTail = cleanLog(v.LogTail)
	var chart template.HTML
	if c, ok := curveChart("Validation loss of run "+v.ID, []curve{{"val loss", v.Curve, false, false}, {"train loss", v.Curve, true, false}}, v.TargetValLoss); ok {
		chart = c
	}
	var meets *bool
	if v.FinalValLoss != nil && v.TargetValLoss != nil && usable(*v.FinalValLoss) {
		ok := *v.FinalValLoss <= *v.TargetValLoss
		meets = &ok
	}
	return render(w, tRun, struct {
		RunView
		Chart       template.HTML
		MeetsTarget *bool
	}{v, chart, meets})
}

// Verification writes the page of one verification.
func Verification(w io.Writer, v VerificationView) error {
	if v.Title == "" {
		v.Title = "Verification " + v.ID
	}
	var chart template.HTML
	if len(v.Candidate.TimesMs)+len(v.Baseline.TimesMs) > 0 {
		chart = Distribution(DistributionData{
			Title:  "Train times of the candidate and the baseline runs, with means and 95% CIs",
			XLabel: "train time (s)",
			Sides:  []DistributionSide{side("candidate", v.Candidate), side("baseline", v.Baseline)},
		})
	}
	return render(w, tVerification, struct {
		VerificationView
		Chart template.HTML
	}{v, chart})
}

func side(label string, s SideSummary) DistributionSide {
	sec := func(p *float64) *float64 {
		if p == nil {
			return nil
		}
		v := *p / 1000
		return &v
	}
	d := DistributionSide{Label: label, Mean: sec(s.MeanMs), CILow: sec(s.CILowMs), CIHigh: sec(s.CIHighMs)}
	for _, t := range s.TimesMs {
		d.Values = append(d.Values, t/1000)
	}
	return d
}

// Audit writes the page of one audit.
func Audit(w io.Writer, v AuditView) error {
	if v.Title == "" {
		v.Title = "Audit " + v.ID
	}
	chart, _ := curveChart("Validation loss: original run and re-run", []curve{{"original", v.OriginalCurve, false, false}, {"re-run", v.RerunCurve, false, true}}, v.TargetValLoss)
	return render(w, tAudit, struct {
		AuditView
		Chart template.HTML
	}{v, chart})
}

// Index writes the start page.
func Index(w io.Writer, v IndexView) error {
	if v.Title == "" {
		v.Title = "Overview"
	}
	return render(w, tIndex, v)
}

// Error writes a small error page for an HTTP status.
func Error(w io.Writer, status int, msg string) error {
	text := http.StatusText(status)
	if text == "" {
		text = "Error"
	}
	return render(w, tError, struct {
		Page
		Status     int
		StatusText string
		Message    string
	}{Page{Title: strconv.Itoa(status) + " " + text}, status, text, msg})
}

type curve struct {
	name   string
	pts    []CurvePoint
	train  bool // plot TrainLoss instead of ValLoss
	dashed bool
}

// curveChart plots the curves that have at least one finite point; ok is false when
// none has.
func curveChart(title string, curves []curve, target *float64) (template.HTML, bool) {
	c := LineChartData{Title: title, XLabel: "step", YLabel: "loss"}
	ok := false
	for _, cv := range curves {
		s := Series{Name: cv.name, Dashed: cv.dashed}
		for _, p := range cv.pts {
			l := p.ValLoss
			if cv.train {
				l = p.TrainLoss
			}
			if l != nil && usable(*l) {
				s.Points = append(s.Points, Point{X: float64(p.Step), Y: *l})
			}
		}
		if len(s.Points) == 0 {
			continue
		}
		if !cv.train {
			ok = true
		}
		c.Series = append(c.Series, s)
	}
	if !ok {
		return "", false
	}
	if target != nil && usable(*target) {
		c.Target = &TargetLine{Y: *target, Label: "target " + strconv.FormatFloat(*target, 'f', -1, 64)}
	}
	return LineChart(c), true
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?`)

// cleanLog makes log text displayable: valid UTF-8, no ANSI escapes, no control
// characters but tab and newline, carriage returns as line breaks.
func cleanLog(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = ansi.ReplaceAllString(s, "")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r < 0x20 || (r >= 0x7f && r < 0xa0) || r == 0xFFFE || r == 0xFFFF {
			return -1
		}
		return r
	}, s)
}

var funcs = template.FuncMap{
	"css":  func() template.CSS { return template.CSS(style) },
	"home": home,
	"version": func(p Page) string {
		if p.Version != "" {
			return p.Version
		}
		return Version
	},
	"badge":   badge,
	"outcome": outcome,
	"loss":    func(v any) string { return fmtFloat(v, 4, 1) },
	"secs":    fmtSecs,
	"pval":    fmtP,
	"fixed":   func(decimals int, v any) string { return fmtFloat(v, decimals, 1) },
	"speedup": func(v any) string {
		if _, ok := floatOf(v); !ok {
			return "—"
		}
		return "×" + fmtFloat(v, 3, 1)
	},
	"pct":   func(v any) string { return fmtFloat(v, 0, 100) + "%" },
	"when":  fmtTime,
	"date":  fmtDate,
	"dur":   fmtDuration,
	"bytes": fmtBytes,
	"short": short,
	"shell": shellJoin,
	"int": func(p *int) string {
		if p == nil {
			return "—"
		}
		return strconv.Itoa(*p)
	},
	"yesno": func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	},
	"deref": func(p *bool) bool { return p != nil && *p },
	"sideRow": func(label string, s SideSummary) any {
		return struct {
			Label string
			S     SideSummary
		}{label, s}
	},
	"rowClass": func(state string) string {
		switch strings.ToLower(state) {
		case "failed":
			return "bad"
		case "error", "canceled", "cancelled":
			return "warn"
		}
		return ""
	},
}

func home(p Page) string {
	if p.Home == "" {
		return "/"
	}
	return p.Home
}

// outcome is what a badge shows: the verdict once there is one, else the state.
func outcome(verdict, state string) string {
	if verdict != "" {
		return verdict
	}
	if state == "" {
		return "unknown"
	}
	return state
}

// badge maps a state or verdict to a badge colour class.
func badge(s string) string {
	switch strings.ToLower(s) {
	case "verified", "reproduced", "succeeded", "valid", "ok", "passed":
		return "badge ok"
	case "rejected", "drifted", "failed", "invalid":
		return "badge bad"
	case "inconclusive", "error":
		return "badge warn"
	case "canceled", "cancelled":
		return "badge off"
	}
	return "badge run"
}

func floatOf(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case *float64:
		if x == nil {
			return 0, false
		}
		return *x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	}
	return 0, false
}

func fmtFloat(v any, decimals int, scale float64) string {
	f, ok := floatOf(v)
	if !ok {
		return "—"
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f*scale, 'f', decimals, 64)
}

// fmtSecs formats milliseconds as seconds.
func fmtSecs(v any) string {
	f, ok := floatOf(v)
	if !ok {
		return "—"
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	s := f / 1000
	d := 1
	switch a := math.Abs(s); {
	case a < 10:
		d = 3
	case a < 100:
		d = 2
	}
	return strconv.FormatFloat(s, 'f', d, 64) + " s"
}

func fmtP(v any) string {
	f, ok := floatOf(v)
	if !ok {
		return "—"
	}
	switch {
	case math.IsNaN(f) || math.IsInf(f, 0):
		return strconv.FormatFloat(f, 'f', -1, 64)
	case f != 0 && math.Abs(f) < 0.0001:
		return strconv.FormatFloat(f, 'e', 1, 64)
	}
	return strconv.FormatFloat(f, 'f', 4, 64)
}

func fmtTime(v any) string {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case *time.Time:
		if x != nil {
			t = *x
		}
	}
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// fmtDate is fmtTime to the minute, for tables.
func fmtDate(v any) string {
	s := fmtTime(v)
	if len(s) == len("2006-01-02 15:04:05 UTC") {
		return s[:len("2006-01-02 15:04")]
	}
	return s
}

func fmtDuration(from, to *time.Time) string {
	if from == nil || to == nil || from.IsZero() || to.IsZero() || to.Before(*from) {
		return "—"
	}
	d := to.Sub(*from)
	if d < time.Minute {
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
	}
	return d.Round(time.Second).String()
}

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB"} {
		f /= unit
		if f < unit || u == "TiB" {
			return strconv.FormatFloat(f, 'f', 1, 64) + " " + u
		}
	}
	return ""
}

// short abbreviates a digest ("sha256:" prefix kept out) to 12 characters.
func short(s string) string {
	s = strings.TrimPrefix(s, "sha256:")
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

var plainArg = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// shellJoin writes a command line as a POSIX shell would need it quoted.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if plainArg.MatchString(a) {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}
