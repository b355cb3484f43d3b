package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"

	"github.com/google/uuid"
	"github.com/labstack/echo/v5"

	"github.com/repro/repro/openapi"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
	"github.com/repro/repro/verify"
)

// campaigns returns the verification and audit service, or answers 503.
func (s *Server) campaigns() (*verify.Service, error) {
	if s.cfg.Campaigns == nil {
		return nil, problem(http.StatusServiceUnavailable, "this service runs no verifications or audits (no worker)")
	}
	return s.cfg.Campaigns, nil
}

// CreateVerification starts the verification of a record claim.
func (s *Server) CreateVerification(c *echo.Context) error {
	p := who(c)
	if p.admin {
		return problem(http.StatusForbidden, "the admin token belongs to no team: verify with a team token")
	}
	vs, err := s.campaigns()
	if err != nil {
		return err
	}
	req := c.Request()
	staging, raw, files, err := s.receiveMultipart(c, "verification-", "a 'spec' part and, unless the spec names candidate_run, 'files' parts", true, false)
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging) // moved away on success
	var in openapi.VerificationRequest
	if err := s.decodePart(raw, "VerificationRequest", &in); err != nil {
		return err
	}
	vr := verify.VerificationRequest{TeamID: p.team.ID, Task: in.Task}
	if in.Runs != nil {
		vr.Runs = *in.Runs
	}
	if in.Profile != nil {
		vr.Profile = *in.Profile
	}
	if in.CandidateRun != nil {
		vr.CandidateRun = in.CandidateRun.String()
		if len(files) > 0 {
			return fieldProblem(http.StatusBadRequest, "files", "the spec names candidate_run: send no files")
		}
	} else if len(files) == 0 {
		return fieldProblem(http.StatusBadRequest, "files", "missing: the candidate's files, or candidate_run in the spec")
	} else {
		vr.CandidateDir = staging
	}
	if in.BaselineRun != nil {
		vr.BaselineRun = in.BaselineRun.String()
	}
	if in.MaxFailedFraction != nil {
		vr.MaxFailedFraction = float64(*in.MaxFailedFraction)
	}
	camp, err := vs.StartVerification(req.Context(), vr)
	if err != nil {
		return err
	}
	camp.TeamName = p.team.Name
	c.Response().Header().Set("Location", "/v1/verifications/"+camp.ID)
	out, err := s.verificationToAPI(c, camp)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, out)
}

// visibleCampaign loads a campaign the caller may see: the team's own, every one
// for the admin, and public evidence (verified records, audits of them) for
// everyone, as on the pages.
func (s *Server) visibleCampaign(c *echo.Context, kind store.CampaignKind, id uuid.UUID) (store.Campaign, error) {
	ctx := c.Request().Context()
	camp, err := s.store.GetCampaign(ctx, kind, "", id.String())
	p := who(c)
	if errors.Is(err, store.ErrNotFound) ||
		(err == nil && !p.admin && camp.TeamID != p.team.ID && !s.publicCampaign(ctx, camp)) {
		return camp, problem(http.StatusNotFound, fmt.Sprintf("no %s %s", kind, id))
	}
	return camp, err
}

// GetVerification returns one verification.
func (s *Server) GetVerification(c *echo.Context, id openapi.CampaignID) error {
	return getCampaign(s, c, store.KindVerification, id, s.verificationToAPI)
}

// ListVerifications pages through the team's verifications.
func (s *Server) ListVerifications(c *echo.Context, params openapi.ListVerificationsParams) error {
	f := s.campaignFilter(c, store.KindVerification, params.Limit, params.Cursor)
	if params.Task != nil {
		f.Task = *params.Task
	}
	items, next, err := listCampaigns(s, c, f, s.verificationToAPI)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, openapi.VerificationList{Items: items, NextCursor: next})
}

// getCampaign answers one campaign the caller may see, in its API form.
func getCampaign[T any](s *Server, c *echo.Context, kind store.CampaignKind, id uuid.UUID, toAPI func(*echo.Context, store.Campaign) (T, error)) error {
	camp, err := s.visibleCampaign(c, kind, id)
	if err != nil {
		return err
	}
	out, err := toAPI(c, camp)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// listCampaigns returns a page of campaigns in their API form and the next cursor.
func listCampaigns[T any](s *Server, c *echo.Context, f store.CampaignFilter, toAPI func(*echo.Context, store.Campaign) (T, error)) ([]T, *string, error) {
	camps, next, err := s.store.ListCampaigns(c.Request().Context(), f)
	if err != nil {
		return nil, nil, err
	}
	items := make([]T, 0, len(camps))
	for _, camp := range camps {
		item, err := toAPI(c, camp)
		if err != nil {
			return nil, nil, err
		}
		items = append(items, item)
	}
	if next == "" {
		return items, nil, nil
	}
	return items, &next, nil
}

// cancelCampaignAPI asks a campaign of the caller's team to stop and answers it.
func cancelCampaignAPI[T any](s *Server, c *echo.Context, kind store.CampaignKind, id uuid.UUID, toAPI func(*echo.Context, store.Campaign) (T, error)) error {
	camp, err := s.cancelCampaign(c, kind, id)
	if err != nil {
		return err
	}
	out, err := toAPI(c, camp)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, out)
}

func (s *Server) campaignFilter(c *echo.Context, kind store.CampaignKind, limit *int, cursor *string) store.CampaignFilter {
	p := who(c)
	f := store.CampaignFilter{Kind: kind, TeamID: p.team.ID}
	if p.admin {
		f.TeamID = ""
	}
	if limit != nil {
		f.Limit = *limit
	}
	if cursor != nil {
		f.Cursor = *cursor
	}
	return f
}

// CancelVerification asks a verification to stop.
func (s *Server) CancelVerification(c *echo.Context, id openapi.CampaignID) error {
	return cancelCampaignAPI(s, c, store.KindVerification, id, s.verificationToAPI)
}

func (s *Server) cancelCampaign(c *echo.Context, kind store.CampaignKind, id uuid.UUID) (store.Campaign, error) {
	camp, err := s.visibleCampaign(c, kind, id)
	if err != nil {
		return camp, err
	}
	if p := who(c); !p.admin && camp.TeamID != p.team.ID {
		return camp, problem(http.StatusForbidden, fmt.Sprintf("%s %s is another team's", kind, id))
	}
	vs, err := s.campaigns()
	if err != nil {
		return camp, err
	}
	return vs.Cancel(c.Request().Context(), kind, "", id.String())
}

// GetVerificationReport streams the archived report.
func (s *Server) GetVerificationReport(c *echo.Context, id openapi.CampaignID, params openapi.GetVerificationReportParams) error {
	return s.report(c, store.KindVerification, id, params.Format != nil && *params.Format == openapi.GetVerificationReportParamsFormatMarkdown)
}

// GetAuditReport streams the archived report.
func (s *Server) GetAuditReport(c *echo.Context, id openapi.CampaignID, params openapi.GetAuditReportParams) error {
	return s.report(c, store.KindAudit, id, params.Format != nil && *params.Format == openapi.GetAuditReportParamsFormatMarkdown)
}

func (s *Server) report(c *echo.Context, kind store.CampaignKind, id uuid.UUID, markdown bool) error {
	camp, err := s.visibleCampaign(c, kind, id)
	if err != nil {
		return err
	}
	if camp.State != store.CampaignDone {
		return problem(http.StatusConflict, fmt.Sprintf("%s %s is %s: it has no report yet", kind, id, camp.State))
	}
	name, ctype := "report.json", "application/json"
	if markdown {
		name, ctype = "report.md", "text/markdown; charset=utf-8"
	}
	rc, info, err := s.archive.Get(c.Request().Context(), verify.ReportKey(kind, camp.ID, name))
	if err != nil {
		return err
	}
	defer rc.Close()
	if info.SHA256 != "" {
		c.Response().Header().Set("X-Content-SHA256", info.SHA256)
	}
	return c.Stream(http.StatusOK, ctype, rc)
}

// CreateAudit starts an audit.
func (s *Server) CreateAudit(c *echo.Context) error {
	p := who(c)
	vs, err := s.campaigns()
	if err != nil {
		return err
	}
	if p.admin {
		return problem(http.StatusForbidden, "the admin token belongs to no team: audit with a team token")
	}
	body, err := io.ReadAll(io.LimitReader(c.Request().Body, maxSpecBytes+1))
	if err != nil {
		return err
	}
	var in openapi.AuditRequest
	if err := s.decodePart(body, "AuditRequest", &in); err != nil {
		return err
	}
	ar := verify.AuditRequest{TeamID: p.team.ID}
	if in.Run != nil {
		ar.RunID = in.Run.String()
	}
	if in.Verification != nil {
		ar.VerificationID = in.Verification.String()
	}
	if in.LossTolerance != nil {
		ar.LossTolerance = float64(*in.LossTolerance)
	}
	if in.TimeTolerance != nil {
		ar.TimeTolerance = float64(*in.TimeTolerance)
	}
	if in.MaxRuns != nil {
		ar.MaxRuns = *in.MaxRuns
	}
	camp, err := vs.StartAudit(c.Request().Context(), ar)
	if err != nil {
		return err
	}
	camp.TeamName = p.team.Name
	c.Response().Header().Set("Location", "/v1/audits/"+camp.ID)
	out, err := s.auditToAPI(c, camp)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, out)
}

// GetAudit returns one audit.
func (s *Server) GetAudit(c *echo.Context, id openapi.CampaignID) error {
	return getCampaign(s, c, store.KindAudit, id, s.auditToAPI)
}

// ListAudits pages through the team's audits.
func (s *Server) ListAudits(c *echo.Context, params openapi.ListAuditsParams) error {
	items, next, err := listCampaigns(s, c, s.campaignFilter(c, store.KindAudit, params.Limit, params.Cursor), s.auditToAPI)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, openapi.AuditList{Items: items, NextCursor: next})
}

// CancelAudit asks an audit to stop.
func (s *Server) CancelAudit(c *echo.Context, id openapi.CampaignID) error {
	return cancelCampaignAPI(s, c, store.KindAudit, id, s.auditToAPI)
}

// campaignRuns lists a campaign's runs in their API form.
func (s *Server) campaignRuns(c *echo.Context, id string) ([]openapi.CampaignRun, error) {
	runs, err := s.store.RunsOf(c.Request().Context(), id)
	if err != nil {
		return nil, err
	}
	out := make([]openapi.CampaignRun, 0, len(runs))
	for _, r := range runs {
		cr := openapi.CampaignRun{Id: uuid.MustParse(r.ID), Side: r.Side, State: openapi.RunState(r.State), Seed: r.Spec.Seed}
		if r.Pair > 0 {
			pair := r.Pair
			cr.Pair = &pair
		}
		if r.Reason != "" {
			reason := r.Reason
			cr.Reason = &reason
		}
		var m tasks.Metrics
		if r.Metrics != nil && json.Unmarshal(r.Metrics, &m) == nil {
			cr.ValLoss, cr.TrainTimeMs = m.FinalValLoss, m.TrainTimeMs
		}
		out = append(out, cr)
	}
	return out, nil
}

// campaignCommon fills what verifications and audits share.
type campaignCommon struct {
	runs     []openapi.CampaignRun
	reason   *string
	report   *map[string]any
	location *string
}

func (s *Server) campaignCommon(c *echo.Context, camp store.Campaign) (campaignCommon, error) {
	var out campaignCommon
	var err error
	if out.runs, err = s.campaignRuns(c, camp.ID); err != nil {
		return out, err
	}
	if camp.Reason != "" {
		out.reason = &camp.Reason
	}
	if camp.Report != nil {
		var rep map[string]any
		if json.Unmarshal(camp.Report, &rep) == nil {
			out.report = &rep
		}
	}
	if camp.ReportLocation != "" {
		out.location = &camp.ReportLocation
	}
	return out, nil
}

func (s *Server) verificationToAPI(c *echo.Context, camp store.Campaign) (openapi.Verification, error) {
	cc, err := s.campaignCommon(c, camp)
	if err != nil {
		return openapi.Verification{}, err
	}
	out := openapi.Verification{
		Id: uuid.MustParse(camp.ID), Team: camp.TeamName, Task: camp.Task, State: openapi.CampaignState(camp.State),
		CancelRequested: camp.CancelRequested, CreatedAt: camp.CreatedAt, FinishedAt: camp.FinishedAt,
		Runs: cc.runs, Reason: cc.reason, Report: cc.report, ReportLocation: cc.location,
	}
	if camp.Outcome != "" {
		v := openapi.VerificationVerdict(camp.Outcome)
		out.Verdict = &v
	}
	if camp.Progress != nil {
		var p openapi.VerificationProgress
		if json.Unmarshal(camp.Progress, &p) == nil {
			out.Progress = &p
		}
	}
	return out, nil
}

func (s *Server) auditToAPI(c *echo.Context, camp store.Campaign) (openapi.Audit, error) {
	cc, err := s.campaignCommon(c, camp)
	if err != nil {
		return openapi.Audit{}, err
	}
	var spec verify.AuditSpec
	_ = json.Unmarshal(camp.Spec, &spec)
	out := openapi.Audit{
		Id: uuid.MustParse(camp.ID), Team: camp.TeamName, State: openapi.CampaignState(camp.State),
		SubjectKind: openapi.AuditSubjectKind(spec.SubjectKind), CancelRequested: camp.CancelRequested,
		CreatedAt: camp.CreatedAt, FinishedAt: camp.FinishedAt,
		Runs: cc.runs, Reason: cc.reason, Report: cc.report, ReportLocation: cc.location,
	}
	if id, err := uuid.Parse(spec.SubjectID); err == nil {
		out.SubjectId = id
	}
	if camp.Outcome != "" {
		o := openapi.AuditOutcome(camp.Outcome)
		out.Outcome = &o
	}
	if camp.Progress != nil {
		var p openapi.AuditProgress
		if json.Unmarshal(camp.Progress, &p) == nil {
			out.Progress = &p
		}
	}
	return out, nil
}

// GetLeaderboard returns a task's verified records and its benchmark scores.
func (s *Server) GetLeaderboard(c *echo.Context, params openapi.GetLeaderboardParams) error {
	t, err := s.task(params.Task)
	if err != nil {
		return err
	}
	lb, err := s.leaderboard(c, t)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, lb)
}

// leaderboard collects a task's verified records (fastest mean first) and each
// team's best valid FSR among its submissions (calibration, verification, audit
// and agent-attempt runs are not submissions) that were scored against reference
// times.
func (s *Server) leaderboard(c *echo.Context, t *tasks.Task) (openapi.Leaderboard, error) {
	ctx := c.Request().Context()
	lb := openapi.Leaderboard{Task: t.ID, TargetValLoss: t.TargetValLoss, Profile: t.Profile,
		Records: []openapi.LeaderboardRecord{}, Scores: []openapi.LeaderboardScore{}}
	cursor := ""
	for {
		camps, next, err := s.store.ListCampaigns(ctx, store.CampaignFilter{Kind: store.KindVerification, Task: t.ID,
			Outcome: string(tasks.VerdictVerified), Limit: 200, Cursor: cursor})
		if err != nil {
			return lb, err
		}
		for _, camp := range camps {
			if rec, ok := leaderboardRecord(camp); ok {
				lb.Records = append(lb.Records, rec)
			}
		}
		if cursor = next; cursor == "" {
			break
		}
	}
	sort.SliceStable(lb.Records, func(i, j int) bool { return lb.Records[i].MeanTimeMs < lb.Records[j].MeanTimeMs })
	best := map[string]*openapi.LeaderboardScore{}
	for {
		runs, next, err := s.store.ListRuns(ctx, store.ListFilter{Task: t.ID, Scored: true, Purpose: store.PurposeSubmission, Limit: 200, Cursor: cursor})
		if err != nil {
			return lb, err
		}
		for _, r := range runs {
			var sc tasks.Score
			if json.Unmarshal(r.Score, &sc) != nil {
				continue
			}
			b := best[r.TeamName]
			if b == nil {
				b = &openapi.LeaderboardScore{Team: r.TeamName, BestFsr: -1e300}
				best[r.TeamName] = b
			}
			b.Runs++
			// Only an FSR measured against reference times ranks: a valid run on an
			// uncalibrated profile has FSR 0 for want of them, not for its speed.
			if sc.Valid && sc.StartMs > 0 && sc.FSR > b.BestFsr {
				b.BestFsr, b.BestRun, b.Date = sc.FSR, uuid.MustParse(r.ID), r.CreatedAt
			}
		}
		if cursor = next; cursor == "" {
			break
		}
	}
	for _, b := range best {
		if b.BestRun != uuid.Nil {
			lb.Scores = append(lb.Scores, *b)
		}
	}
	sort.Slice(lb.Scores, func(i, j int) bool {
		if lb.Scores[i].BestFsr != lb.Scores[j].BestFsr {
			return lb.Scores[i].BestFsr > lb.Scores[j].BestFsr
		}
		return lb.Scores[i].Team < lb.Scores[j].Team
	})
	return lb, nil
}

// leaderboardRecord reads a verified verification's report.
func leaderboardRecord(camp store.Campaign) (openapi.LeaderboardRecord, bool) {
	var rep verify.VerificationReport
	if camp.Report == nil || json.Unmarshal(camp.Report, &rep) != nil || rep.Verdict.CandidateTime == nil || rep.Verdict.Loss == nil {
		return openapi.LeaderboardRecord{}, false
	}
	v := rep.Verdict
	rec := openapi.LeaderboardRecord{
		Verification: uuid.MustParse(camp.ID), Team: camp.TeamName, MeanTimeMs: v.CandidateTime.Summary.Mean,
		CiLowMs: v.CandidateTime.Summary.Low, CiHighMs: v.CandidateTime.Summary.High, OlympicMeanMs: v.CandidateTime.OlympicMeanMs,
		LossPValue: v.Loss.Test.P, Runs: v.N, DecidedAt: rep.DecidedAt,
	}
	mean := v.Loss.Summary.Mean
	rec.MeanValLoss = &mean
	if e := v.Paired; e != nil && v.SpeedTest == tasks.VerdictSpeedPaired {
		rec.Speedup = &e.Ratio
	} else if e := v.Welch; e != nil {
		rec.Speedup = &e.Ratio
	}
	return rec, true
}
