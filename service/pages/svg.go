package pages

import (
	"html"
	"html/template"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The data-mark colours. They are fixed (never taken from view data) and distinctive,
// so that a screenshot test can find the plots by colour.
const (
	ColorSeries0   = "#1f77b4" // first line series, baseline dots, bars
	ColorSeries1   = "#ff7f0e" // second line series
	ColorSeries2   = "#2ca02c"
	ColorSeries3   = "#9467bd"
	ColorCandidate = "#d62728" // first Distribution side (the candidate)
	ColorBaseline  = "#1f77b4" // second Distribution side (the baseline)
)

var (
	seriesColors = []string{ColorSeries0, ColorSeries1, ColorSeries2, ColorSeries3}
	sideColors   = []string{ColorCandidate, ColorBaseline, ColorSeries2, ColorSeries3}
)

const (
	fontFamily = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif"
	inkAxis    = "#57606a"
	inkText    = "#24292f"
	inkGrid    = "#eaeef2"
	inkStat    = "#24292f" // mean markers, CI bars, whiskers
)

// Point is one (x, y) sample of a LineChart series.
type Point struct{ X, Y float64 }

// Series is one line of a LineChart. Points need not be sorted; points with a
// non-finite coordinate are skipped. Solid series are drawn with Series[0] on top;
// dashed series are drawn over the solid ones, so that an overlay of two nearly equal
// curves (original vs re-run) shows both.
type Series struct {
	Name   string
	Points []Point
	Dashed bool
}

// TargetLine is a horizontal dashed reference line, e.g. the target val loss 3.28.
type TargetLine struct {
	Y     float64
	Label string // default "target <Y>"
}

// LineChartData describes a line chart: x (e.g. step) against y (e.g. val loss).
type LineChartData struct {
	Title  string // the <title> and aria-label
	XLabel string
	YLabel string
	Series []Series    // colours in order: #1f77b4, #ff7f0e, #2ca02c, #9467bd
	Target *TargetLine // optional
	Width  int         // pixels; 0 means 960
	Height int         // pixels; 0 means 360
}

// DistributionSide is one row of a Distribution plot: one dot per value, plus a mean
// marker and a confidence-interval bar when given.
type DistributionSide struct {
	Label  string
	Values []float64 // non-finite values are skipped
	Mean   *float64
	CILow  *float64
	CIHigh *float64
}

// DistributionData describes a strip plot of two (or more) samples, e.g. the train
// times of the candidate and the baseline runs of a verification. Sides[0] is drawn in
// #d62728 (candidate), Sides[1] in #1f77b4 (baseline).
type DistributionData struct {
	Title  string
	XLabel string // e.g. "train time (s)"
	Sides  []DistributionSide
	Width  int // pixels; 0 means 960
}

// Bar is one bar of a BarChart with an optional whisker (e.g. a 95% CI).
type Bar struct {
	Label string
	Value float64 // non-finite values are skipped
	Low   *float64
	High  *float64
}

// BarChartData describes a horizontal chart with one row per bar (e.g. the mean time
// of each leaderboard record), marks in #1f77b4. With FromZero the marks are bars
// from zero; without, the axis fits the data and each value is a dot with its whisker
// (a bar that does not start at zero would mislead; close values such as record
// times differ visibly only this way).
type BarChartData struct {
	Title    string
	XLabel   string
	Bars     []Bar
	FromZero bool
	Width    int // pixels; 0 means 960
}

// usable reports whether v can be plotted: finite and not absurdly large (so that
// ranges and pixel coordinates stay finite).
func usable(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && math.Abs(v) < 1e250 }

// LineChart renders c as one <svg> element.
func LineChart(c LineChartData) template.HTML {
	w, h := c.Width, c.Height
	if w <= 0 {
		w = 960
	}
	if h <= 0 {
		h = 360
	}
	const ml, mr, mt, mb = 68, 20, 34, 50
	pw, ph := float64(w-ml-mr), float64(h-mt-mb)

	type clean struct {
		name   string
		color  string
		dashed bool
		pts    []Point
	}
	var series []clean
	xs, ys := newRange(), newRange()
	for i, s := range c.Series {
		var pts []Point
		for _, p := range s.Points {
			if usable(p.X) && usable(p.Y) {
				pts = append(pts, p)
				xs.add(p.X)
				ys.add(p.Y)
			}
		}
		sort.SliceStable(pts, func(a, b int) bool { return pts[a].X < pts[b].X })
		series = append(series, clean{name: s.Name, color: seriesColors[i%len(seriesColors)], dashed: s.Dashed, pts: pts})
	}
	hasData := !xs.empty()
	target := c.Target
	if target != nil && !usable(target.Y) {
		target = nil
	}
	if target != nil && hasData {
		ys.add(target.Y)
	}
	xa := niceAxis(xs.lo, xs.hi, 7)
	ya := niceAxis(ys.lo, ys.hi, 6)
	if !hasData {
		xa, ya = niceAxis(0, 1, 5), niceAxis(0, 1, 5)
	}
	px := func(x float64) float64 { return float64(ml) + (x-xa.lo)/(xa.hi-xa.lo)*pw }
	py := func(y float64) float64 { return float64(mt) + ph - (y-ya.lo)/(ya.hi-ya.lo)*ph }

	var b svgBuilder
	b.open(w, h, "chart line-chart", c.Title)
	// Grid and axes.
	for _, t := range ya.ticks {
		y := py(t)
		b.line(ml, y, float64(ml)+pw, y, inkGrid, 1, "grid")
		b.text(float64(ml)-8, y+4, "end", "tick", ya.label(t))
	}
	for _, t := range xa.ticks {
		x := px(t)
		b.line(x, float64(mt)+ph, x, float64(mt)+ph+5, inkAxis, 1, "tick")
		b.text(x, float64(mt)+ph+19, "middle", "tick", xa.label(t))
	}
	b.line(ml, float64(mt)+ph, float64(ml)+pw, float64(mt)+ph, inkAxis, 1, "axis")
	b.line(ml, mt, ml, float64(mt)+ph, inkAxis, 1, "axis")
	b.text(float64(ml)+pw/2, float64(h)-8, "middle", "axis-label", c.XLabel)
	if c.YLabel != "" {
		b.raw(`<text class="axis-label" transform="rotate(-90)" x="` + num(-(float64(mt) + ph/2)) + `" y="16" text-anchor="middle" fill="` + inkText + `">` + esc(c.YLabel) + `</text>`)
	}
	if !hasData {
		b.text(float64(ml)+pw/2, float64(mt)+ph/2, "middle", "empty", "no data")
	}

	// Target line.
	if target != nil && hasData {
		y := py(target.Y)
		b.raw(`<line class="target" x1="` + num(float64(ml)) + `" y1="` + num(y) + `" x2="` + num(float64(ml)+pw) + `" y2="` + num(y) + `" stroke="#6e7781" stroke-width="1.5" stroke-dasharray="6 4"/>`)
	}

	// Series: solid ones last to first, then dashed ones.
	var order []int
	for i := len(series) - 1; i >= 0; i-- {
		if !series[i].dashed {
			order = append(order, i)
		}
	}
	for i := range series {
		if series[i].dashed {
			order = append(order, i)
		}
	}
	for _, i := range order {
		s := series[i]
		if len(s.pts) == 0 {
			continue
		}
		var d strings.Builder
		for j, p := range s.pts {
			if j == 0 {
				d.WriteString("M")
			} else {
				d.WriteString(" L")
			}
			d.WriteString(num(px(p.X)) + " " + num(py(p.Y)))
		}
		cls := "mark series series-" + strconv.Itoa(i)
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="8 5"`
		}
		b.raw(`<path class="` + cls + `" d="` + d.String() + `" fill="none" stroke="` + s.color + `" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"` + dash + `><title>` + esc(s.name) + `</title></path>`)
		if len(s.pts) <= 120 && !s.dashed {
			b.raw(`<g class="` + cls + ` points" fill="` + s.color + `">`)
			for _, p := range s.pts {
				b.raw(`<circle cx="` + num(px(p.X)) + `" cy="` + num(py(p.Y)) + `" r="3"><title>` + esc(s.name) + ` ` + esc(xa.value(p.X)) + `: ` + esc(strconv.FormatFloat(p.Y, 'g', 6, 64)) + `</title></circle>`)
			}
			b.raw(`</g>`)
		}
	}

	// Legend, top left, above the plot.
	lx := float64(ml)
	ly := 16.0
	if len(series) > 1 || (len(series) == 1 && series[0].name != "") {
		for _, s := range series {
			dash := ""
			if s.dashed {
				dash = ` stroke-dasharray="6 3"`
			}
			b.raw(`<line class="legend-swatch" x1="` + num(lx) + `" y1="` + num(ly-4) + `" x2="` + num(lx+18) + `" y2="` + num(ly-4) + `" stroke="` + s.color + `" stroke-width="3"` + dash + `/>`)
			name := truncate(s.name, 28)
			b.text(lx+24, ly, "start", "legend", name)
			lx += 24 + textWidth(name) + 18
		}
	}
	if target != nil && hasData {
		label := target.Label
		if label == "" {
			label = "target " + strconv.FormatFloat(target.Y, 'g', 6, 64)
		}
		label = truncate(label, 32)
		b.raw(`<line class="legend-swatch" x1="` + num(lx) + `" y1="` + num(ly-4) + `" x2="` + num(lx+18) + `" y2="` + num(ly-4) + `" stroke="#6e7781" stroke-width="1.5" stroke-dasharray="6 4"/>`)
		b.text(lx+24, ly, "start", "legend", label)
	}
	b.close()
	return template.HTML(b.String())
}

// Distribution renders d as one <svg> element: per side a row of deterministically
// jittered dots, a mean marker and a 95% CI bar.
func Distribution(d DistributionData) template.HTML {
	w := d.Width
	if w <= 0 {
		w = 960
	}
	const ml, mr, mt, mb, rowH = 120, 24, 12, 50, 76
	rows := len(d.Sides)
	if rows == 0 {
		rows = 1
	}
	h := mt + rows*rowH + mb
	pw := float64(w - ml - mr)
	plotBottom := float64(mt + rows*rowH)

	xs := newRange()
	for _, s := range d.Sides {
		for _, v := range s.Values {
			if usable(v) {
				xs.add(v)
			}
		}
		for _, p := range []*float64{s.Mean, s.CILow, s.CIHigh} {
			if p != nil && usable(*p) {
				xs.add(*p)
			}
		}
	}
	hasData := !xs.empty()
	xa := niceAxis(xs.lo, xs.hi, 7)
	if !hasData {
		xa = niceAxis(0, 1, 5)
	}
	px := func(x float64) float64 { return float64(ml) + (x-xa.lo)/(xa.hi-xa.lo)*pw }

	var b svgBuilder
	b.open(w, h, "chart distribution", d.Title)
	for _, t := range xa.ticks {
		x := px(t)
		b.line(x, mt, x, plotBottom, inkGrid, 1, "grid")
		b.line(x, plotBottom, x, plotBottom+5, inkAxis, 1, "tick")
		b.text(x, plotBottom+19, "middle", "tick", xa.label(t))
	}
	b.line(ml, plotBottom, float64(ml)+pw, plotBottom, inkAxis, 1, "axis")
	b.text(float64(ml)+pw/2, float64(h)-8, "middle", "axis-label", d.XLabel)
	if !hasData {
		b.text(float64(ml)+pw/2, float64(mt)+rowH/2, "middle", "empty", "no data")
	}
	// Key, bottom right: what the diamond and the bar mean.
	kx, ky := float64(w-mr), float64(h)-12
	b.text(kx, ky+4, "end", "key", "95% CI of the mean")
	kx -= textWidth("95% CI of the mean")*1.1 + 8
	b.raw(`<g class="key" stroke="` + inkStat + `" stroke-width="2"><line x1="` + num(kx-22) + `" y1="` + num(ky) + `" x2="` + num(kx) + `" y2="` + num(ky) + `"/><line x1="` + num(kx-22) + `" y1="` + num(ky-5) + `" x2="` + num(kx-22) + `" y2="` + num(ky+5) + `"/><line x1="` + num(kx) + `" y1="` + num(ky-5) + `" x2="` + num(kx) + `" y2="` + num(ky+5) + `"/></g>`)
	kx -= 22 + 16
	b.text(kx, ky+4, "end", "key", "mean")
	kx -= textWidth("mean")*1.25 + 12
	b.raw(`<path class="key" d="M` + num(kx) + ` ` + num(ky-5) + ` L` + num(kx+5) + ` ` + num(ky) + ` L` + num(kx) + ` ` + num(ky+5) + ` L` + num(kx-5) + ` ` + num(ky) + ` Z" fill="#ffffff" stroke="` + inkStat + `" stroke-width="2"/>`)

	for i, s := range d.Sides {
		top := float64(mt + i*rowH)
		color := sideColors[i%len(sideColors)]
		dotY := top + 26
		statY := top + 56
		if i > 0 {
			b.line(ml, top, float64(ml)+pw, top, inkGrid, 1, "row-sep")
		}
		n := 0
		for _, v := range s.Values {
			if usable(v) {
				n++
			}
		}
		label := truncate(s.Label, 16)
		b.raw(`<text class="row-label" x="` + num(float64(ml)-12) + `" y="` + num(dotY+4) + `" text-anchor="end" fill="` + inkText + `" font-weight="600">` + esc(label) + `<title>` + esc(s.Label) + `</title></text>`)
		b.text(float64(ml)-12, dotY+22, "end", "row-n", "n = "+strconv.Itoa(n))

		cls := "mark dot side-" + strconv.Itoa(i)
		b.raw(`<g class="` + cls + `" fill="` + color + `" stroke="#ffffff" stroke-width="1">`)
		k := 0
		for _, v := range s.Values {
			if !usable(v) {
				continue
			}
			// Deterministic jitter: the golden-ratio sequence spreads dots evenly.
			j := math.Mod(float64(k)*0.6180339887498949, 1) - 0.5
			k++
			b.raw(`<circle cx="` + num(px(v)) + `" cy="` + num(dotY+j*24) + `" r="5"><title>` + esc(xa.value(v)) + `</title></circle>`)
		}
		b.raw(`</g>`)

		if s.CILow != nil && s.CIHigh != nil && usable(*s.CILow) && usable(*s.CIHigh) {
			x1, x2 := px(*s.CILow), px(*s.CIHigh)
			b.raw(`<g class="ci" stroke="` + inkStat + `" stroke-width="2"><title>95% CI ` + esc(xa.value(*s.CILow)) + ` – ` + esc(xa.value(*s.CIHigh)) + `</title>` +
				`<line x1="` + num(x1) + `" y1="` + num(statY) + `" x2="` + num(x2) + `" y2="` + num(statY) + `"/>` +
				`<line x1="` + num(x1) + `" y1="` + num(statY-6) + `" x2="` + num(x1) + `" y2="` + num(statY+6) + `"/>` +
				`<line x1="` + num(x2) + `" y1="` + num(statY-6) + `" x2="` + num(x2) + `" y2="` + num(statY+6) + `"/></g>`)
		}
		if s.Mean != nil && usable(*s.Mean) {
			x := px(*s.Mean)
			b.raw(`<g class="mean"><title>mean ` + esc(xa.value(*s.Mean)) + `</title>` +
				`<line x1="` + num(x) + `" y1="` + num(dotY-16) + `" x2="` + num(x) + `" y2="` + num(dotY+16) + `" stroke="` + inkStat + `" stroke-width="2"/>` +
				`<path d="M` + num(x) + ` ` + num(statY-6) + ` L` + num(x+6) + ` ` + num(statY) + ` L` + num(x) + ` ` + num(statY+6) + ` L` + num(x-6) + ` ` + num(statY) + ` Z" fill="#ffffff" stroke="` + inkStat + `" stroke-width="2"/></g>`)
		}
	}
	b.close()
	return template.HTML(b.String())
}

// BarChart renders d as one <svg> element of horizontal bars with whiskers.
func BarChart(d BarChartData) template.HTML {
	w := d.Width
	if w <= 0 {
		w = 960
	}
	type row struct {
		label    string
		v        float64
		lo, hi   float64
		whiskers bool
	}
	var bars []row
	xs := newRange()
	if d.FromZero {
		xs.add(0)
	}
	for _, bar := range d.Bars {
		if !usable(bar.Value) {
			continue
		}
		r := row{label: bar.Label, v: bar.Value}
		xs.add(bar.Value)
		if bar.Low != nil && bar.High != nil && usable(*bar.Low) && usable(*bar.High) {
			r.lo, r.hi, r.whiskers = *bar.Low, *bar.High, true
			xs.add(r.lo)
			xs.add(r.hi)
		}
		bars = append(bars, r)
	}
	const ml, mr, mt, mb, rowH = 190, 80, 10, 50, 32
	rows := len(bars)
	if rows == 0 {
		rows = 1
	}
	h := mt + rows*rowH + mb
	pw := float64(w - ml - mr)
	plotBottom := float64(mt + rows*rowH)
	xa := niceAxis(xs.lo, xs.hi, 6)
	px := func(x float64) float64 { return float64(ml) + (x-xa.lo)/(xa.hi-xa.lo)*pw }

	var b svgBuilder
	b.open(w, h, "chart bar-chart", d.Title)
	for _, t := range xa.ticks {
		x := px(t)
		b.line(x, mt, x, plotBottom, inkGrid, 1, "grid")
		b.line(x, plotBottom, x, plotBottom+5, inkAxis, 1, "tick")
		b.text(x, plotBottom+19, "middle", "tick", xa.label(t))
	}
	b.line(ml, plotBottom, float64(ml)+pw, plotBottom, inkAxis, 1, "axis")
	if d.FromZero {
		b.line(px(0), mt, px(0), plotBottom, inkAxis, 1, "axis")
	} else {
		b.line(ml, mt, ml, plotBottom, inkAxis, 1, "axis")
	}
	b.text(float64(ml)+pw/2, float64(h)-8, "middle", "axis-label", d.XLabel)
	if len(bars) == 0 {
		b.text(float64(ml)+pw/2, float64(mt)+rowH/2+4, "middle", "empty", "no data")
	}
	for i, r := range bars {
		top := float64(mt + i*rowH)
		cy := top + rowH/2
		label := truncate(r.label, 26)
		b.raw(`<text class="row-label" x="` + num(float64(ml)-10) + `" y="` + num(cy+4) + `" text-anchor="end" fill="` + inkText + `">` + esc(label) + `<title>` + esc(r.label) + `</title></text>`)
		end := px(r.v) + 7
		if d.FromZero {
			x0, x1 := px(0), px(r.v)
			if x1 < x0 {
				x0, x1 = x1, x0
			}
			b.raw(`<rect class="mark bar" x="` + num(x0) + `" y="` + num(top+7) + `" width="` + num(x1-x0) + `" height="` + num(rowH-14) + `" fill="` + ColorSeries0 + `"><title>` + esc(r.label) + `: ` + esc(xa.value(r.v)) + `</title></rect>`)
			end = x1
		} else {
			b.line(ml, cy, float64(ml)+pw, cy, inkGrid, 1, "row-guide")
		}
		if r.whiskers {
			wl, wh := px(r.lo), px(r.hi)
			b.raw(`<g class="ci" stroke="` + inkStat + `" stroke-width="1.5">` +
				`<line x1="` + num(wl) + `" y1="` + num(cy) + `" x2="` + num(wh) + `" y2="` + num(cy) + `"/>` +
				`<line x1="` + num(wl) + `" y1="` + num(cy-6) + `" x2="` + num(wl) + `" y2="` + num(cy+6) + `"/>` +
				`<line x1="` + num(wh) + `" y1="` + num(cy-6) + `" x2="` + num(wh) + `" y2="` + num(cy+6) + `"/></g>`)
			end = math.Max(end, math.Max(wl, wh))
		}
		if !d.FromZero {
			b.raw(`<circle class="mark bar" cx="` + num(px(r.v)) + `" cy="` + num(cy) + `" r="7" fill="` + ColorSeries0 + `" stroke="#ffffff" stroke-width="1.5"><title>` + esc(r.label) + `: ` + esc(xa.value(r.v)) + `</title></circle>`)
		}
		b.text(end+6, cy+4, "start", "value", xa.value(r.v))
	}
	b.close()
	return template.HTML(b.String())
}

// svgBuilder writes SVG markup. Every string that reaches it from data goes through
// esc; every number through num.
type svgBuilder struct{ strings.Builder }

func (b *svgBuilder) open(w, h int, class, title string) {
	ws, hs := strconv.Itoa(w), strconv.Itoa(h)
	label := title
	if label == "" {
		label = "chart"
	}
	b.WriteString(`<svg class="` + class + `" role="img" aria-label="` + esc(label) + `" viewBox="0 0 ` + ws + ` ` + hs + `" width="` + ws + `" height="` + hs + `" font-family="` + fontFamily + `" font-size="12">`)
	b.WriteString(`<title>` + esc(label) + `</title>`)
	b.WriteString(`<rect class="bg" x="0" y="0" width="` + ws + `" height="` + hs + `" fill="#ffffff"/>`)
}

func (b *svgBuilder) close() { b.WriteString(`</svg>`) }

func (b *svgBuilder) raw(s string) { b.WriteString(s) }

func (b *svgBuilder) line(x1, y1, x2, y2 any, color string, width float64, class string) {
	b.WriteString(`<line class="` + class + `" x1="` + anyNum(x1) + `" y1="` + anyNum(y1) + `" x2="` + anyNum(x2) + `" y2="` + anyNum(y2) + `" stroke="` + color + `" stroke-width="` + num(width) + `"/>`)
}

func (b *svgBuilder) text(x, y float64, anchor, class, s string) {
	if s == "" {
		return
	}
	fill := inkText
	if class == "tick" || class == "row-n" || class == "empty" || class == "key" {
		fill = inkAxis
	}
	b.WriteString(`<text class="` + class + `" x="` + num(x) + `" y="` + num(y) + `" text-anchor="` + anchor + `" fill="` + fill + `">` + esc(s) + `</text>`)
}

// num formats a coordinate; non-finite values (which callers never pass) become 0 so
// that the SVG stays valid whatever happens.
func num(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		v = 0
	}
	v = math.Round(v*100) / 100
	if v == 0 {
		v = 0 // no "-0"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func anyNum(v any) string {
	switch x := v.(type) {
	case int:
		return strconv.Itoa(x)
	case float64:
		return num(x)
	}
	return "0"
}

// esc escapes s for SVG text and attribute values, dropping what XML cannot hold.
func esc(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return ' '
		}
		if r < 0x20 || (r >= 0x7f && r < 0xa0) || r == 0xFFFE || r == 0xFFFF || (r >= 0xD800 && r <= 0xDFFF) {
			return -1
		}
		return r
	}, s)
	return html.EscapeString(s)
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// textWidth estimates the width of s at 12px in a sans-serif font.
func textWidth(s string) float64 { return float64(utf8.RuneCountInString(s)) * 6.6 }

type valueRange struct{ lo, hi float64 }

func newRange() valueRange { return valueRange{lo: math.Inf(1), hi: math.Inf(-1)} }

func (r *valueRange) add(v float64) {
	r.lo = math.Min(r.lo, v)
	r.hi = math.Max(r.hi, v)
}

func (r valueRange) empty() bool { return r.lo > r.hi }

// axis is a linear axis with "nice" tick values (1, 2 or 5 times a power of ten).
type axis struct {
	lo, hi   float64
	step     float64
	decimals int
	ticks    []float64
}

func niceAxis(lo, hi float64, n int) axis {
	if !usable(lo) || !usable(hi) {
		lo, hi = 0, 1
	}
	if hi < lo {
		lo, hi = hi, lo
	}
	if hi == lo {
		pad := math.Abs(lo) * 0.05
		if pad == 0 {
			pad = 1
		}
		lo, hi = lo-pad, hi+pad
	}
	step := niceNum((hi-lo)/float64(n-1), true)
	if !usable(step) || step <= 0 {
		step = 1
	}
	a := axis{lo: math.Floor(lo/step) * step, hi: math.Ceil(hi/step) * step, step: step}
	if a.hi <= a.lo { // rounding at extreme magnitudes
		a.lo, a.hi = lo, hi
	}
	a.decimals = 0
	if step < 1 {
		a.decimals = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	for i := 0; i <= 50; i++ {
		t := a.lo + float64(i)*step
		if t > a.hi+step*1e-9 {
			break
		}
		a.ticks = append(a.ticks, t)
	}
	return a
}

func niceNum(x float64, round bool) float64 {
	if x <= 0 || !usable(x) {
		return 1
	}
	exp := math.Floor(math.Log10(x))
	f := x / math.Pow(10, exp)
	var nf float64
	if round {
		switch {
		case f < 1.5:
			nf = 1
		case f < 3:
			nf = 2
		case f < 7:
			nf = 5
		default:
			nf = 10
		}
	} else {
		switch {
		case f <= 1:
			nf = 1
		case f <= 2:
			nf = 2
		case f <= 5:
			nf = 5
		default:
			nf = 10
		}
	}
	return nf * math.Pow(10, exp)
}

// label formats a tick value.
func (a axis) label(v float64) string {
	if math.Abs(v) < a.step*1e-9 {
		v = 0
	}
	if a.decimals > 8 || math.Abs(v) >= 1e9 {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	return strconv.FormatFloat(v, 'f', a.decimals, 64)
}

// value formats a data value with one more decimal than the ticks.
func (a axis) value(v float64) string {
	if a.decimals+1 > 8 || math.Abs(v) >= 1e9 {
		return strconv.FormatFloat(v, 'g', 5, 64)
	}
	return strconv.FormatFloat(v, 'f', a.decimals+1, 64)
}
