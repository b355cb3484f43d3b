package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/repro/repro/openapi"
)

// verifyCmd asks the service to verify a record claim and follows it to its verdict.
func verifyCmd(ctx context.Context, args []string) error {
	if len(args) > 0 && (args[0] == "status" || args[0] == "report") {
		return campaignShow(ctx, "verify", args)
	}
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	task := fs.String("task", "", "the task whose record the claim beats (required)")
	runs := fs.Int("runs", 0, "runs of each side (server default: 10)")
	candRun := fs.String("candidate-run", "", "use this run's archived submission as the candidate instead of FILEs")
	baseRun := fs.String("baseline-run", "", "use this run's archived submission as the baseline (default: the task's start record)")
	maxFailed := fs.Float64("max-failed-fraction", 0, "share of candidate runs that may fail before the claim is rejected")
	detach := fs.Bool("detach", false, "print the verification ID and return at once")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: repro verify --task ID [--runs N] [--baseline-run ID] FILE...")
		fmt.Fprintln(os.Stderr, "       repro verify --task ID --candidate-run ID [--runs N]")
		fmt.Fprintln(os.Stderr, "       repro verify status ID | report ID [--markdown]")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *task == "" {
		return usageError{"verify: --task ID is required"}
	}
	spec := openapi.VerificationRequest{Task: *task}
	if *runs != 0 {
		spec.Runs = runs
	}
	if flagSet(fs, "max-failed-fraction") {
		f := float32(*maxFailed)
		spec.MaxFailedFraction = &f
	}
	for _, p := range []struct {
		flag string
		v    string
		dst  **uuid.UUID
	}{{"--candidate-run", *candRun, &spec.CandidateRun}, {"--baseline-run", *baseRun, &spec.BaselineRun}} {
		if p.v == "" {
			continue
		}
		id, err := uuid.Parse(p.v)
		if err != nil {
			return usageError{fmt.Sprintf("verify: %s %q is not a run ID", p.flag, p.v)}
		}
		*p.dst = &id
	}
	var files []upload
	if fs.NArg() > 0 {
		if spec.CandidateRun != nil {
			return usageError{"verify: give either FILEs or --candidate-run, not both"}
		}
		var err error
		if files, err = collectFiles(fs.Args()); err != nil {
			return err
		}
	} else if spec.CandidateRun == nil {
		return usageError{"verify: give the candidate's FILEs or --candidate-run ID"}
	}
	a, err := newAPI()
	if err != nil {
		return err
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if err := writeSubmission(mw, spec, files); err != nil {
		return err
	}
	resp, err := a.c.CreateVerificationWithBodyWithResponse(ctx, mw.FormDataContentType(), &body)
	if err != nil {
		return connErr(a, err)
	}
	if resp.JSON201 == nil {
		return apiError(resp.StatusCode(), resp.Body)
	}
	v := resp.JSON201
	total := 0
	if v.Progress != nil {
		total = v.Progress.Total / 2
	}
	fmt.Fprintf(os.Stderr, "verification %s of task %s started: %d runs of each side, interleaved A/B on one worker\n", v.Id, v.Task, total)
	if *detach {
		fmt.Println(v.Id)
		return nil
	}
	return followVerification(ctx, a, v.Id)
}

// followVerification prints progress (runs done / total, the loss p-value so far)
// until the verdict, then the summary; exit status 1 unless verified.
func followVerification(ctx context.Context, a *api, id uuid.UUID) error {
	last := ""
	for {
		resp, err := a.c.GetVerificationWithResponse(ctx, id)
		if err != nil {
			return connErr(a, err)
		}
		if resp.JSON200 == nil {
			return apiError(resp.StatusCode(), resp.Body)
		}
		v := resp.JSON200
		if p := v.Progress; p != nil {
			line := fmt.Sprintf("verify %s: runs %d/%d done", v.Id, p.Done, p.Total)
			if p.LossPValue != nil {
				line += fmt.Sprintf(", loss p-value %.3g", *p.LossPValue)
			}
			if p.VerdictSoFar != nil {
				line += ", verdict so far " + *p.VerdictSoFar
			}
			if line != last {
				fmt.Fprintln(os.Stderr, line)
				last = line
			}
		}
		if v.State != openapi.CampaignStateRunning {
			printVerification(os.Stdout, v)
			if v.Verdict == nil || *v.Verdict != openapi.Verified {
				return exitCode(1)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "stopped following; the verification goes on (repro verify status %s)\n", v.Id)
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

func printVerification(w io.Writer, v *openapi.Verification) {
	verdict := string(v.State)
	if v.Verdict != nil {
		verdict = strings.ToUpper(string(*v.Verdict))
	}
	fmt.Fprintf(w, "verification %s (task %s, team %s): %s\n", v.Id, v.Task, v.Team, verdict)
	if v.Reason != nil {
		fmt.Fprintf(w, "  %s\n", *v.Reason)
	}
	if v.Report != nil {
		if vd, ok := (*v.Report)["verdict"].(map[string]any); ok {
			if reasons, ok := vd["reasons"].([]any); ok {
				for _, r := range reasons {
					fmt.Fprintf(w, "  - %v\n", r)
				}
			}
		}
	}
	for _, r := range v.Runs {
		fmt.Fprintf(w, "  %s pair %d %-9s seed %d: %s", r.Id, deref(r.Pair), r.Side, deref(r.Seed), r.State)
		if r.ValLoss != nil {
			fmt.Fprintf(w, ", val loss %.4f", *r.ValLoss)
		}
		if r.TrainTimeMs != nil {
			fmt.Fprintf(w, ", train %.0f ms", *r.TrainTimeMs)
		}
		fmt.Fprintln(w)
	}
	if v.ReportLocation != nil {
		fmt.Fprintf(w, "report: %s (repro verify report %s [--markdown])\n", *v.ReportLocation, v.Id)
	}
}

// auditCmd asks the service to re-run an archived run or verification and follows it.
func auditCmd(ctx context.Context, args []string) error {
	if len(args) > 0 && (args[0] == "status" || args[0] == "report") {
		return campaignShow(ctx, "audit", args)
	}
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	run := fs.String("run", "", "an archived run to re-run")
	ver := fs.String("verification", "", "a decided verification whose candidate runs to re-run")
	lossTol := fs.Float64("loss-tolerance", 0, "absolute tolerance on the final val loss (server default 0.006)")
	timeTol := fs.Float64("time-tolerance", 0, "relative tolerance on the train time (server default 0.10)")
	maxRuns := fs.Int("max-runs", 0, "of a verification: re-run at most this many runs")
	detach := fs.Bool("detach", false, "print the audit ID and return at once")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: repro audit --run ID | --verification ID [--loss-tolerance X] [--time-tolerance F]")
		fmt.Fprintln(os.Stderr, "       repro audit status ID | report ID [--markdown]")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if (*run == "") == (*ver == "") || fs.NArg() > 0 {
		return usageError{"audit: give one of --run ID or --verification ID (and nothing else)"}
	}
	var req openapi.AuditRequest
	for _, p := range []struct {
		flag, v string
		dst     **uuid.UUID
	}{{"--run", *run, &req.Run}, {"--verification", *ver, &req.Verification}} {
		if p.v == "" {
			continue
		}
		id, err := uuid.Parse(p.v)
		if err != nil {
			return usageError{fmt.Sprintf("audit: %s %q is not an ID", p.flag, p.v)}
		}
		*p.dst = &id
	}
	if *lossTol != 0 {
		f := float32(*lossTol)
		req.LossTolerance = &f
	}
	if *timeTol != 0 {
		f := float32(*timeTol)
		req.TimeTolerance = &f
	}
	if *maxRuns != 0 {
		req.MaxRuns = maxRuns
	}
	a, err := newAPI()
	if err != nil {
		return err
	}
	resp, err := a.c.CreateAuditWithResponse(ctx, req)
	if err != nil {
		return connErr(a, err)
	}
	if resp.JSON201 == nil {
		return apiError(resp.StatusCode(), resp.Body)
	}
	au := resp.JSON201
	fmt.Fprintf(os.Stderr, "audit %s of %s %s started\n", au.Id, au.SubjectKind, au.SubjectId)
	if *detach {
		fmt.Println(au.Id)
		return nil
	}
	return followAudit(ctx, a, au.Id)
}

func followAudit(ctx context.Context, a *api, id uuid.UUID) error {
	last := ""
	for {
		resp, err := a.c.GetAuditWithResponse(ctx, id)
		if err != nil {
			return connErr(a, err)
		}
		if resp.JSON200 == nil {
			return apiError(resp.StatusCode(), resp.Body)
		}
		au := resp.JSON200
		if p := au.Progress; p != nil {
			line := fmt.Sprintf("audit %s: archive checked %v, re-runs %d/%d done", au.Id, p.Checked, p.Done, p.Total)
			if line != last {
				fmt.Fprintln(os.Stderr, line)
				last = line
			}
		}
		if au.State != openapi.CampaignStateRunning {
			printAudit(os.Stdout, au)
			if au.Outcome == nil || *au.Outcome != openapi.Reproduced {
				return exitCode(1)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "stopped following; the audit goes on (repro audit status %s)\n", au.Id)
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

func printAudit(w io.Writer, au *openapi.Audit) {
	outcome := string(au.State)
	if au.Outcome != nil {
		outcome = strings.ToUpper(string(*au.Outcome))
	}
	fmt.Fprintf(w, "audit %s of %s %s: %s\n", au.Id, au.SubjectKind, au.SubjectId, outcome)
	if au.Reason != nil {
		fmt.Fprintf(w, "  %s\n", *au.Reason)
	}
	if au.Report != nil {
		if reasons, ok := (*au.Report)["reasons"].([]any); ok {
			for _, r := range reasons {
				fmt.Fprintf(w, "  - %v\n", r)
			}
		}
	}
	if au.ReportLocation != nil {
		fmt.Fprintf(w, "report: %s (repro audit report %s [--markdown])\n", *au.ReportLocation, au.Id)
	}
}

// campaignShow: `repro verify|audit status ID` and `... report ID [--markdown]`.
func campaignShow(ctx context.Context, cmd string, args []string) error {
	fs := flag.NewFlagSet(cmd+" "+args[0], flag.ContinueOnError)
	markdown := fs.Bool("markdown", false, "the Markdown report instead of JSON")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{fmt.Sprintf("usage: repro %s %s ID", cmd, args[0])}
	}
	id, err := uuid.Parse(fs.Arg(0))
	if err != nil {
		return usageError{fmt.Sprintf("%s %s: %q is not an ID", cmd, args[0], fs.Arg(0))}
	}
	a, err := newAPI()
	if err != nil {
		return err
	}
	if args[0] == "report" {
		var status int
		var body []byte
		if cmd == "agent" {
			p := openapi.GetAgentRunReportParams{}
			if *markdown {
				f := openapi.GetAgentRunReportParamsFormatMarkdown
				p.Format = &f
			}
			resp, err := a.c.GetAgentRunReportWithResponse(ctx, id, &p)
			if err != nil {
				return connErr(a, err)
			}
			status, body = resp.StatusCode(), resp.Body
		} else if cmd == "verify" {
			p := openapi.GetVerificationReportParams{}
			if *markdown {
				f := openapi.GetVerificationReportParamsFormatMarkdown
				p.Format = &f
			}
			resp, err := a.c.GetVerificationReportWithResponse(ctx, id, &p)
			if err != nil {
				return connErr(a, err)
			}
			status, body = resp.StatusCode(), resp.Body
		} else {
			p := openapi.GetAuditReportParams{}
			if *markdown {
				f := openapi.GetAuditReportParamsFormatMarkdown
				p.Format = &f
			}
			resp, err := a.c.GetAuditReportWithResponse(ctx, id, &p)
			if err != nil {
				return connErr(a, err)
			}
			status, body = resp.StatusCode(), resp.Body
		}
		if status != 200 {
			return apiError(status, body)
		}
		_, err = os.Stdout.Write(body)
		return err
	}
	if cmd == "agent" {
		resp, err := a.c.GetAgentRunWithResponse(ctx, id)
		if err != nil {
			return connErr(a, err)
		}
		if resp.JSON200 == nil {
			return apiError(resp.StatusCode(), resp.Body)
		}
		printAgentRun(os.Stdout, resp.JSON200)
		return nil
	}
	if cmd == "verify" {
		resp, err := a.c.GetVerificationWithResponse(ctx, id)
		if err != nil {
			return connErr(a, err)
		}
		if resp.JSON200 == nil {
			return apiError(resp.StatusCode(), resp.Body)
		}
		printVerification(os.Stdout, resp.JSON200)
		return nil
	}
	resp, err := a.c.GetAuditWithResponse(ctx, id)
	if err != nil {
		return connErr(a, err)
	}
	if resp.JSON200 == nil {
		return apiError(resp.StatusCode(), resp.Body)
	}
	printAudit(os.Stdout, resp.JSON200)
	return nil
}

// agentCmd starts an agent run and follows it to its score.
func agentCmd(ctx context.Context, args []string) error {
	if len(args) > 0 && (args[0] == "status" || args[0] == "report") {
		return campaignShow(ctx, "agent", args)
	}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	task := fs.String("task", "", "the task the agent works on (required)")
	env := fs.String("env", "", "the environment the agent runs in (required)")
	hints := fs.String("hints", "", "hint levels given to the agent, e.g. 1,2")
	llm := fs.String("llm", "", "the LLM endpoint the agent may use through the gateway")
	maxAttempts := fs.Int("max-attempts", 0, "attempt budget (server default 20)")
	maxWall := fs.Int("max-wall", 0, "the agent's wall time in seconds (server default 3600)")
	maxGPUHours := fs.Float64("max-gpu-hours", 0, "GPU-hours over the attempts (0: no limit)")
	maxTokens := fs.Int64("max-llm-tokens", 0, "LLM tokens (0: no limit)")
	maxCost := fs.Float64("max-llm-cost", 0, "LLM cost in USD (0: no limit)")
	detach := fs.Bool("detach", false, "print the agent run ID and return at once")
	var envs listFlag
	fs.Var(&envs, "e", "KEY=VALUE environment variable for the agent (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: repro agent --task ID --env NAME [--hints 1,2] [--llm NAME] [budget flags] [FILE...] -- CMD...")
		fmt.Fprintln(os.Stderr, "       repro agent status ID | report ID [--markdown]")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	files, command := splitCommand(fs.Args())
	if *task == "" || *env == "" || len(command) == 0 {
		return usageError{"agent: --task ID, --env NAME and -- CMD... are required"}
	}
	spec := openapi.AgentRunRequest{Task: *task}
	spec.Agent.Environment, spec.Agent.Command = *env, command
	var err error
	if spec.Agent.Env, err = envFlags("agent", envs); err != nil {
		return err
	}
	if *hints != "" {
		var hs []int
		for _, h := range strings.Split(*hints, ",") {
			var n int
			if _, err := fmt.Sscan(h, &n); err != nil {
				return usageError{fmt.Sprintf("agent: --hints %q: want levels like 1,2", *hints)}
			}
			hs = append(hs, n)
		}
		spec.Hints = &hs
	}
	if *llm != "" {
		spec.Llm = llm
	}
	b := openapi.AgentBudget{}
	if *maxAttempts != 0 {
		b.MaxAttempts = maxAttempts
	}
	if *maxWall != 0 {
		b.MaxWallSeconds = maxWall
	}
	if *maxGPUHours != 0 {
		f := float32(*maxGPUHours)
		b.MaxGpuHours = &f
	}
	if *maxTokens != 0 {
		b.MaxLlmTokens = maxTokens
	}
	if *maxCost != 0 {
		f := float32(*maxCost)
		b.MaxLlmCostUsd = &f
	}
	spec.Budget = &b
	uploads, err := collectFiles(files)
	if err != nil {
		return err
	}
	a, err := newAPI()
	if err != nil {
		return err
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if err := writeSubmission(mw, spec, uploads); err != nil {
		return err
	}
	resp, err := a.c.CreateAgentRunWithBodyWithResponse(ctx, mw.FormDataContentType(), &body)
	if err != nil {
		return connErr(a, err)
	}
	if resp.JSON201 == nil {
		return apiError(resp.StatusCode(), resp.Body)
	}
	ar := resp.JSON201
	fmt.Fprintf(os.Stderr, "agent run %s on task %s started\n", ar.Id, ar.Task)
	if *detach {
		fmt.Println(ar.Id)
		return nil
	}
	last := ""
	for {
		resp, err := a.c.GetAgentRunWithResponse(ctx, ar.Id)
		if err != nil {
			return connErr(a, err)
		}
		if resp.JSON200 == nil {
			return apiError(resp.StatusCode(), resp.Body)
		}
		ar = resp.JSON200
		line := fmt.Sprintf("agent %s: %s, %d runs", ar.Id, ar.State, len(ar.Runs))
		if u := ar.Usage; u != nil {
			line += fmt.Sprintf(", attempts %v, LLM %v tokens", (*u)["attempts"], usageMap(*u).llmTokens())
		}
		if line != last {
			fmt.Fprintln(os.Stderr, line)
			last = line
		}
		if ar.State != openapi.CampaignStateRunning {
			printAgentRun(os.Stdout, ar)
			if ar.Outcome == nil || *ar.Outcome != openapi.Scored {
				return exitCode(1)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "stopped following; the agent run goes on (repro agent status %s)\n", ar.Id)
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

type usageMap map[string]any

func (u usageMap) llmTokens() any {
	if llm, ok := u["llm"].(map[string]any); ok {
		return llm["total_tokens"]
	}
	return 0
}

func printAgentRun(w io.Writer, ar *openapi.AgentRun) {
	outcome := string(ar.State)
	if ar.Outcome != nil {
		outcome = string(*ar.Outcome)
	}
	fmt.Fprintf(w, "agent run %s (task %s, team %s): %s", ar.Id, ar.Task, ar.Team, outcome)
	if ar.Fsr != nil {
		fmt.Fprintf(w, ", FSR %.3f", *ar.Fsr)
	}
	fmt.Fprintln(w)
	if ar.Reason != nil {
		fmt.Fprintf(w, "  %s\n", *ar.Reason)
	}
	if ar.Report != nil {
		if reasons, ok := (*ar.Report)["reasons"].([]any); ok {
			for _, r := range reasons {
				fmt.Fprintf(w, "  - %v\n", r)
			}
		}
	}
	for _, r := range ar.Runs {
		fmt.Fprintf(w, "  %s %-8s %s", r.Id, r.Side, r.State)
		if r.ValLoss != nil {
			fmt.Fprintf(w, ", val loss %.4f", *r.ValLoss)
		}
		if r.TrainTimeMs != nil {
			fmt.Fprintf(w, ", train %.0f ms", *r.TrainTimeMs)
		}
		fmt.Fprintln(w)
	}
	if ar.ReportLocation != nil {
		fmt.Fprintf(w, "report: %s (repro agent report %s [--markdown])\n", *ar.ReportLocation, ar.Id)
	}
}
