package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v5"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/service/pages"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
	"github.com/repro/repro/verify"
)

// The HTML pages, served by repro itself (no external asset). The leaderboards,
// verified records with their runs, and audits of them are public evidence; every
// other page needs the team's token, given once on /login and kept in an
// HttpOnly, SameSite=Strict cookie.
const tokenCookie = "repro_token"

// logTailMax bounds how much of an archived log a run page reads for its tail.
const logTailMax = 16 << 20

func (s *Server) registerPages(e *echo.Echo) {
	pages.Version = s.cfg.Version
	e.GET("/", s.indexPage)
	e.GET("/leaderboard/:task", s.leaderboardPage)
	e.GET("/runs/:id", s.runPage)
	e.GET("/verifications/:id", s.verificationPage)
	e.GET("/audits/:id", s.auditPage)
	e.GET("/login", s.loginPage)
	e.POST("/login", s.login)
}

// pageViewer is who looks at a page: the admin, a team (by cookie or bearer), or anyone.
func (s *Server) pageViewer(c *echo.Context) principal {
	req := c.Request()
	token, _ := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if token == "" {
		if ck, err := req.Cookie(tokenCookie); err == nil {
			token = ck.Value
		}
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return principal{}
	}
	p, _ := s.principalOf(req.Context(), token) // an unknown token sees what anyone sees
	return p
}

// html renders a page into a buffer, then answers it (an error page on failure).
func (s *Server) html(c *echo.Context, status int, render func(io.Writer) error) error {
	var buf bytes.Buffer
	if err := render(&buf); err != nil {
		s.log.Error("rendering a page", "path", c.Request().URL.Path, "err", err)
		return s.errorPage(c, http.StatusInternalServerError, "the page could not be rendered")
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	return c.HTMLBlob(status, buf.Bytes())
}

func (s *Server) errorPage(c *echo.Context, status int, msg string) error {
	var buf bytes.Buffer
	_ = pages.Error(&buf, status, msg)
	return c.HTMLBlob(status, buf.Bytes())
}

func (s *Server) page(title string) pages.Page {
	return pages.Page{Title: title, Version: s.cfg.Version, Generated: time.Now().UTC()}
}

// loginPage asks for a token; login keeps it in a cookie for the pages.
func (s *Server) loginPage(c *echo.Context) error {
	const form = `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>repro: sign in</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; form-action 'self'">
<style>body{font-family:system-ui,sans-serif;max-width:30rem;margin:4rem auto;padding:0 1rem}input{width:100%;padding:.4rem;margin:.5rem 0}</style></head>
<body><h1>repro</h1><form method="post" action="/login"><label>Team token<input type="password" name="token" autocomplete="off" required></label>
<input type="hidden" name="next" value="{{next}}"><button type="submit">Sign in</button></form>
<p>The token stays in an HttpOnly cookie of this site; it is sent to no one else.</p></body></html>`
	next := safeNext(c.QueryParam("next"))
	return c.HTML(http.StatusOK, strings.Replace(form, "{{next}}", htmlEscape(next), 1))
}

func (s *Server) login(c *echo.Context) error {
	token := strings.TrimSpace(c.FormValue("token"))
	if _, err := s.principalOf(c.Request().Context(), token); err != nil {
		return s.errorPage(c, http.StatusUnauthorized, "unknown or revoked token")
	}
	http.SetCookie(c.Response(), &http.Cookie{
		Name: tokenCookie, Value: token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: c.Request().TLS != nil, MaxAge: 7 * 24 * 3600,
	})
	return c.Redirect(http.StatusSeeOther, safeNext(c.FormValue("next")))
}

// safeNext keeps a redirect on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	return next
}

func htmlEscape(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#39;")
	return r.Replace(s)
}

// needLogin answers a page the viewer may not see: 404 for a team (it may not
// exist for them), the login page for an anonymous viewer.
func (s *Server) needLogin(c *echo.Context, v principal, what string) error {
	if v.admin || v.team.ID != "" {
		return s.errorPage(c, http.StatusNotFound, "no "+what)
	}
	return c.Redirect(http.StatusSeeOther, "/login?next="+url.QueryEscape(c.Request().URL.Path))
}

func (s *Server) indexPage(c *echo.Context) error {
	ctx := c.Request().Context()
	v := pages.IndexView{Page: s.page("repro")}
	if s.cfg.Tasks != nil {
		for i := range s.cfg.Tasks.Tasks {
			t := &s.cfg.Tasks.Tasks[i]
			row := pages.TaskRow{ID: t.ID, Description: t.Change, Href: "/leaderboard/" + t.ID}
			target := t.TargetValLoss
			row.TargetValLoss = &target
			recs, _, err := s.store.ListCampaigns(ctx, store.CampaignFilter{Kind: store.KindVerification, Task: t.ID,
				Outcome: string(tasks.VerdictVerified), Limit: 200})
			if err != nil {
				return err
			}
			row.Records = len(recs)
			for _, camp := range recs {
				if rec, ok := leaderboardRecord(camp); ok && (row.BestTimeMs == nil || rec.MeanTimeMs < *row.BestTimeMs) {
					best := rec.MeanTimeMs
					row.BestTimeMs = &best
				}
			}
			v.Tasks = append(v.Tasks, row)
		}
	}
	viewer := s.pageViewer(c)
	for _, kind := range []store.CampaignKind{store.KindVerification, store.KindAudit} {
		f := store.CampaignFilter{Kind: kind, Limit: 20}
		if !viewer.admin {
			f.TeamID = viewer.team.ID
		}
		if !viewer.admin && viewer.team.ID == "" {
			if kind == store.KindAudit {
				continue
			}
			f.Outcome = string(tasks.VerdictVerified) // the public records
		}
		camps, _, err := s.store.ListCampaigns(ctx, f)
		if err != nil {
			return err
		}
		for _, camp := range camps {
			if kind == store.KindVerification {
				v.Verifications = append(v.Verifications, pages.VerificationSummary{ID: camp.ID, Href: "/verifications/" + camp.ID,
					Team: camp.TeamName, Task: camp.Task, State: string(camp.State), Verdict: camp.Outcome, CreatedAt: camp.CreatedAt})
				continue
			}
			var spec verify.AuditSpec
			_ = json.Unmarshal(camp.Spec, &spec)
			v.Audits = append(v.Audits, pages.AuditSummary{ID: camp.ID, Href: "/audits/" + camp.ID, SubjectKind: spec.SubjectKind,
				SubjectID: spec.SubjectID, State: string(camp.State), Verdict: camp.Outcome, CreatedAt: camp.CreatedAt})
		}
	}
	return s.html(c, http.StatusOK, func(w io.Writer) error { return pages.Index(w, v) })
}

func (s *Server) leaderboardPage(c *echo.Context) error {
	t, err := s.task(c.Param("task"))
	if err != nil {
		return s.errorPage(c, http.StatusNotFound, fmt.Sprintf("no task %q", c.Param("task")))
	}
	lb, err := s.leaderboard(c, t)
	if err != nil {
		return err
	}
	v := pages.LeaderboardView{Page: s.page("Leaderboard: " + t.ID),
		Task: pages.TaskInfo{ID: t.ID, Change: t.Change, TargetValLoss: t.TargetValLoss, Profile: t.Profile}}
	for i, r := range lb.Records {
		v.Records = append(v.Records, pages.RecordRow{Rank: i + 1, Team: r.Team, MeanTimeMs: r.MeanTimeMs, CILowMs: r.CiLowMs,
			CIHighMs: r.CiHighMs, PValue: r.LossPValue, Runs: r.Runs, Date: r.DecidedAt, VerificationHref: "/verifications/" + r.Verification.String()})
	}
	for i, sc := range lb.Scores {
		v.Scores = append(v.Scores, pages.ScoreRow{Rank: i + 1, Team: sc.Team, BestFSR: sc.BestFsr, Runs: sc.Runs,
			BestRunHref: "/runs/" + sc.BestRun.String(), Date: sc.Date})
	}
	return s.html(c, http.StatusOK, func(w io.Writer) error { return pages.Leaderboard(w, v) })
}

// publicCampaign: a verified verification, or an audit of one, is public evidence.
func (s *Server) publicCampaign(ctx context.Context, camp store.Campaign) bool {
	switch camp.Kind {
	case store.KindVerification:
		return camp.Outcome == string(tasks.VerdictVerified)
	case store.KindAudit:
		var spec verify.AuditSpec
		if json.Unmarshal(camp.Spec, &spec) != nil || spec.SubjectKind != "verification" {
			return false
		}
		v, err := s.store.GetCampaign(ctx, store.KindVerification, "", spec.SubjectID)
		return err == nil && v.Outcome == string(tasks.VerdictVerified)
	}
	return false
}

// pageCampaign loads a campaign for a page, or answers it.
func (s *Server) pageCampaign(c *echo.Context, kind store.CampaignKind) (store.Campaign, bool, error) {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return store.Campaign{}, false, s.errorPage(c, http.StatusNotFound, fmt.Sprintf("%q is not a %s ID", c.Param("id"), kind))
	}
	camp, err := s.store.GetCampaign(c.Request().Context(), kind, "", id.String())
	viewer := s.pageViewer(c)
	if errors.Is(err, store.ErrNotFound) {
		return camp, false, s.errorPage(c, http.StatusNotFound, fmt.Sprintf("no %s %s", kind, id))
	}
	if err != nil {
		return camp, false, err
	}
	if !viewer.admin && camp.TeamID != viewer.team.ID && !s.publicCampaign(c.Request().Context(), camp) {
		return camp, false, s.needLogin(c, viewer, fmt.Sprintf("%s %s", kind, id))
	}
	return camp, true, nil
}

func (s *Server) verificationPage(c *echo.Context) error {
	camp, ok, err := s.pageCampaign(c, store.KindVerification)
	if !ok {
		return err
	}
	runs, err := s.store.RunsOf(c.Request().Context(), camp.ID)
	if err != nil {
		return err
	}
	var spec verify.VerificationSpec
	_ = json.Unmarshal(camp.Spec, &spec)
	v := pages.VerificationView{Page: s.page("Verification " + camp.ID), ID: camp.ID, Team: camp.TeamName, Task: camp.Task,
		TaskHref: "/leaderboard/" + camp.Task, Profile: spec.Profile, State: string(camp.State), Verdict: camp.Outcome,
		TargetLoss: spec.Options.TargetLoss, Alpha: tasks.DefaultVerdictAlpha, CreatedAt: &camp.CreatedAt, FinishedAt: camp.FinishedAt}
	var prog verify.VerificationProgress
	if camp.Progress != nil && json.Unmarshal(camp.Progress, &prog) == nil {
		v.Progress = pages.Progress{Done: prog.Done, Total: prog.Total}
	}
	if camp.Reason != "" {
		v.Reasons = append(v.Reasons, camp.Reason)
	}
	var rep verify.VerificationReport
	if camp.Report != nil && json.Unmarshal(camp.Report, &rep) == nil {
		vd := rep.Verdict
		v.Reasons = append(v.Reasons, vd.Reasons...)
		v.Alpha = vd.Options.Alpha
		if vd.Loss != nil {
			v.PValue, v.MeanLoss = fp(vd.Loss.Test.P), fp(vd.Loss.Summary.Mean)
			v.LossCILow, v.LossCIHigh = fp(vd.Loss.Summary.Low), fp(vd.Loss.Summary.High)
		}
		v.Candidate.N, v.Baseline.N = vd.N, vd.BaselineN
		for _, side := range []struct {
			t   *tasks.VerdictTimes
			dst *pages.SideSummary
		}{{vd.CandidateTime, &v.Candidate}, {vd.BaselineTime, &v.Baseline}} {
			if side.t != nil {
				side.dst.MeanMs, side.dst.CILowMs, side.dst.CIHighMs = fp(side.t.Summary.Mean), fp(side.t.Summary.Low), fp(side.t.Summary.High)
				side.dst.OlympicMeanMs = side.t.OlympicMeanMs
			}
		}
		v.Speedup.Test = vd.SpeedTest
		e := vd.Paired
		if vd.SpeedTest == tasks.VerdictSpeedWelch {
			e = vd.Welch
		}
		if e != nil {
			v.Speedup.Speedup, v.Speedup.CILow, v.Speedup.PValue = fp(e.Ratio), fp(e.RatioLow), fp(e.Test.P)
			if !math.IsInf(e.RatioHigh, 0) {
				v.Speedup.CIHigh = fp(e.RatioHigh)
			}
		}
		v.ReportJSONHref = "/v1/verifications/" + camp.ID + "/report"
		v.ReportMarkdownHref = v.ReportJSONHref + "?format=markdown"
	} else if prog.LossP > 0 {
		v.PValue = fp(prog.LossP)
	}
	for _, r := range runs {
		row := pages.VerificationRunRow{Pair: r.Pair, Side: r.Side, RunID: r.ID, Href: "/runs/" + r.ID, State: string(r.State)}
		if r.Spec.Seed != nil {
			row.Seed = *r.Spec.Seed
		}
		if r.State != store.Succeeded {
			row.Note = r.Reason
		}
		var m tasks.Metrics
		if r.Metrics != nil && json.Unmarshal(r.Metrics, &m) == nil {
			row.ValLoss, row.TrainTimeMs = m.FinalValLoss, m.TrainTimeMs
			if m.TrainTimeMs != nil && r.State.Terminal() {
				switch r.Side {
				case verify.SideCandidate:
					v.Candidate.TimesMs = append(v.Candidate.TimesMs, *m.TrainTimeMs)
				case verify.SideBaseline:
					v.Baseline.TimesMs = append(v.Baseline.TimesMs, *m.TrainTimeMs)
				}
			}
		}
		v.Runs = append(v.Runs, row)
	}
	return s.html(c, http.StatusOK, func(w io.Writer) error { return pages.Verification(w, v) })
}

func fp(x float64) *float64 { return &x }

func (s *Server) auditPage(c *echo.Context) error {
	camp, ok, err := s.pageCampaign(c, store.KindAudit)
	if !ok {
		return err
	}
	ctx := c.Request().Context()
	var spec verify.AuditSpec
	_ = json.Unmarshal(camp.Spec, &spec)
	subjectHref := "/runs/" + spec.SubjectID
	if spec.SubjectKind == "verification" {
		subjectHref = "/verifications/" + spec.SubjectID
	}
	v := pages.AuditView{Page: s.page("Audit " + camp.ID), ID: camp.ID, Subject: pages.Subject{Kind: spec.SubjectKind, ID: spec.SubjectID, Href: subjectHref},
		State: string(camp.State), Verdict: camp.Outcome, CreatedAt: &camp.CreatedAt, FinishedAt: camp.FinishedAt}
	if camp.Reason != "" {
		v.Reasons = append(v.Reasons, camp.Reason)
	}
	var rep verify.AuditReport
	if camp.Report != nil && json.Unmarshal(camp.Report, &rep) == nil {
		v.Reasons = append(v.Reasons, rep.Reasons...)
		for _, cmp := range rep.Comparisons {
			row := pages.AuditRow{What: cmp.What, OK: cmp.OK, Original: fmtNum(cmp.Original), Rerun: fmtNum(cmp.Rerun), Delta: fmtNum(cmp.Delta), Tolerance: fmtNum(cmp.Tolerance)}
			if strings.Contains(cmp.What, "time") {
				row.Delta = fmtPct(cmp.Delta)
				if cmp.Tolerance != nil {
					row.Tolerance = fmt.Sprintf("±%.1f%%", 100**cmp.Tolerance)
				}
			} else if cmp.Tolerance != nil {
				row.Tolerance = "±" + row.Tolerance
			}
			if cmp.Original == nil && cmp.Detail != "" {
				row.Original = cmp.Detail
			}
			v.Comparisons = append(v.Comparisons, row)
		}
		for _, d := range rep.Fingerprint {
			v.FingerprintDiffs = append(v.FingerprintDiffs, pages.FingerprintDiff{Field: d.Field, Original: d.Original, Rerun: d.Rerun, Significant: d.Significant})
		}
		v.ReportJSONHref = "/v1/audits/" + camp.ID + "/report"
		v.ReportMarkdownHref = v.ReportJSONHref + "?format=markdown"
	}
	runs, err := s.store.RunsOf(ctx, camp.ID)
	if err != nil {
		return err
	}
	final := map[int]store.Run{}
	for _, r := range runs {
		final[r.Pair] = r
	}
	for i, o := range spec.Originals {
		row := pages.AuditRunRow{OriginalRunID: o.RunID, OriginalHref: "/runs/" + o.RunID}
		if o.Spec.Seed != nil {
			row.Seed = *o.Spec.Seed
		}
		if r, ok := final[i+1]; ok {
			row.RerunRunID, row.RerunHref, row.RerunState = r.ID, "/runs/"+r.ID, string(r.State)
			if i == 0 {
				v.RerunCurve = curveOf(r.Metrics)
				if orig, err := s.store.GetRun(ctx, "", o.RunID); err == nil {
					v.OriginalCurve = curveOf(orig.Metrics)
				}
			}
		}
		v.Runs = append(v.Runs, row)
	}
	if camp.Task != "" && s.cfg.Tasks != nil {
		if t, err := s.cfg.Tasks.Task(camp.Task); err == nil {
			v.TargetValLoss = fp(t.TargetValLoss)
		}
	}
	return s.html(c, http.StatusOK, func(w io.Writer) error { return pages.Audit(w, v) })
}

func fmtNum(v *float64) string {
	if v == nil {
		return ""
	}
	return fmt.Sprintf("%.4g", *v)
}

func fmtPct(v *float64) string {
	if v == nil {
		return ""
	}
	return fmt.Sprintf("%+.1f%%", 100**v)
}

func curveOf(raw json.RawMessage) []pages.CurvePoint {
	var m tasks.Metrics
	if raw == nil || json.Unmarshal(raw, &m) != nil {
		return nil
	}
	out := make([]pages.CurvePoint, 0, len(m.Curve))
	for _, p := range m.Curve {
		if p.ValLoss != nil || p.TrainLoss != nil {
			out = append(out, pages.CurvePoint{Step: p.Step, ValLoss: p.ValLoss, TrainLoss: p.TrainLoss})
		}
	}
	return out
}

// runPage shows one run; runs of public evidence (a verified record, an audit of
// one) are public, other runs need their team's token.
func (s *Server) runPage(c *echo.Context) error {
	ctx := c.Request().Context()
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return s.errorPage(c, http.StatusNotFound, fmt.Sprintf("%q is not a run ID", c.Param("id")))
	}
	r, err := s.store.GetRun(ctx, "", id.String())
	if errors.Is(err, store.ErrNotFound) {
		return s.errorPage(c, http.StatusNotFound, "no run "+id.String())
	}
	if err != nil {
		return err
	}
	viewer := s.pageViewer(c)
	public := false
	var parent store.Campaign
	if r.ParentID != "" {
		if parent, err = s.store.GetCampaign(ctx, "", "", r.ParentID); err == nil {
			public = s.publicCampaign(ctx, parent)
		}
	}
	if !viewer.admin && r.TeamID != viewer.team.ID && !public {
		return s.needLogin(c, viewer, "run "+id.String())
	}
	v := pages.RunView{Page: s.page("Run " + r.ID), ID: r.ID, Team: r.TeamName, State: string(r.State), Reason: r.Reason, Task: r.Spec.Task,
		Environment: r.Spec.Environment, Command: r.Spec.Command, ImageID: r.ImageID, CreatedAt: &r.CreatedAt, StartedAt: r.StartedAt,
		FinishedAt: r.FinishedAt, ExitCode: r.ExitCode, OOMKilled: r.OOMKilled, TimedOut: r.TimedOut, Purpose: r.Purpose,
		BundleLocation: r.BundleLocation, ManifestSHA256: r.ManifestSHA256, Curve: curveOf(r.Metrics)}
	if r.Spec.Seed != nil {
		v.Seed = *r.Spec.Seed
	}
	if r.Spec.Task != "" {
		v.TaskHref = "/leaderboard/" + r.Spec.Task
		if s.cfg.Tasks != nil {
			if t, err := s.cfg.Tasks.Task(r.Spec.Task); err == nil {
				v.TargetValLoss = fp(t.TargetValLoss)
			}
		}
	}
	switch parent.Kind {
	case store.KindVerification:
		v.VerificationID, v.VerificationHref = parent.ID, "/verifications/"+parent.ID
	case store.KindAudit:
		v.AuditID, v.AuditHref = parent.ID, "/audits/"+parent.ID
	}
	var m tasks.Metrics
	if r.Metrics != nil && json.Unmarshal(r.Metrics, &m) == nil {
		v.FinalValLoss, v.TrainTimeMs, v.Steps = m.FinalValLoss, m.TrainTimeMs, m.Steps
	}
	var sc tasks.Score
	if r.Score != nil && json.Unmarshal(r.Score, &sc) == nil {
		v.Score = &pages.Score{Valid: sc.Valid, FSR: sc.FSR, Reason: sc.Reason}
	}
	// The bundle's files come from the archive; the log tail from the archive, or
	// from the local file while the run runs.
	if r.BundleLocation != "" {
		if b, err := archive.ReadBundle(ctx, s.archive, r.ID); err == nil {
			for _, f := range b.Manifest.Files {
				v.Files = append(v.Files, pages.FileRow{Path: f.Path, Size: f.Size, SHA256: f.SHA256, Href: "/v1/runs/" + r.ID + "/files/" + f.Path})
			}
			v.ManifestHref = "/v1/runs/" + r.ID + "/files/manifest.json"
		}
		v.LogHref = "/v1/runs/" + r.ID + "/files/log.txt"
		v.LogTail, v.LogTruncated = s.archivedLogTail(ctx, r.ID)
	} else {
		v.LogHref = "/v1/runs/" + r.ID + "/log"
		v.LogTail, v.LogTruncated = localLogTail(store.RunPaths(s.cfg.DataDir, r.ID).Log)
	}
	return s.html(c, http.StatusOK, func(w io.Writer) error { return pages.Run(w, v) })
}

// archivedLogTail returns the last lines of an archived log (nothing for a log
// larger than logTailMax: the page links to it instead of reading it all).
func (s *Server) archivedLogTail(ctx context.Context, id string) (string, bool) {
	info, err := s.archive.Stat(ctx, archive.BundleKey(id, "log.txt"))
	if err != nil || info.Size > logTailMax {
		return "", err == nil
	}
	rc, _, err := s.archive.Get(ctx, archive.BundleKey(id, "log.txt"))
	if err != nil {
		return "", false
	}
	defer rc.Close()
	b, _ := io.ReadAll(io.LimitReader(rc, logTailMax))
	return lastLines(b, 100)
}

func localLogTail(path string) (string, bool) {
	b, err := readTail(path, 256<<10)
	if err != nil {
		return "", false
	}
	return lastLines(b, 100)
}

// lastLines keeps the last n lines of b; truncated says lines were dropped.
func lastLines(b []byte, n int) (string, bool) {
	b = bytes.TrimRight(b, "\n")
	count, i := 0, len(b)
	for i > 0 {
		j := bytes.LastIndexByte(b[:i], '\n')
		count++
		if count == n {
			return string(b[j+1:]), j >= 0
		}
		if j < 0 {
			break
		}
		i = j
	}
	return string(b), false
}

// readTail reads at most the last n bytes of a file.
func readTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(info.Size()-n, 0)
	return io.ReadAll(io.NewSectionReader(f, off, info.Size()-off))
}
