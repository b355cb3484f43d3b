package worker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/repro/repro/sandbox"
	"github.com/repro/repro/sandbox/gpu"
	"github.com/repro/repro/store"
)

// run runs (or re-attaches to) the run's container and records how it ended.
func (e *Executor) run(ctx context.Context, r store.Run) (store.Run, error) {
	p := store.RunPaths(e.cfg.DataDir, r.ID)
	// The sandbox replays the output from the start on every attach: rewrite the log whole.
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return e.failTo(ctx, r, fmt.Errorf("log file: %w", err))
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	spec := e.sandboxSpec(r, p)
	t, err := e.taskOf(r)
	if err != nil {
		logf.Close()
		return e.failTo(ctx, r, err)
	}
	e.taskSandbox(t, &spec)
	if err := e.agentSandbox(r, &spec); err != nil {
		logf.Close()
		return e.failTo(ctx, r, err)
	}
	var alloc *gpu.Allocation
	if r.Purpose != store.PurposeAgent {
		// An agent container holds no GPUs and no node: its attempts need them.
		alloc, err = e.acquireGPUs(ctx, r, p)
	}
	if err != nil {
		logf.Close()
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		return e.failTo(ctx, r, err)
	}
	defer alloc.Release()
	stop := e.watchCancel(watchCtx, r.ID)
	var sampler *gpu.Sampler
	if alloc != nil && len(alloc.Devices) > 0 {
		spec.Devices = alloc.DeviceRequests()
		if sampler, err = e.cfg.GPUs.Node.StartSampler(watchCtx, alloc.Devices, e.cfg.Telemetry); err != nil {
			logf.Close()
			return e.failTo(ctx, r, err)
		}
		stop = either(watchCtx, stop, sampler.Failed())
	}
	res, err := e.docker.Run(ctx, spec, logf, stop)
	var gpuSummary *gpu.Summary
	if sampler != nil {
		tel, serr := sampler.Stop()
		gpuSummary = &tel.Summary
		if werr := writeJSON(filepath.Join(p.Bundle, "telemetry.json"), tel); werr != nil && err == nil {
			err = werr
		}
		if serr != nil && ctx.Err() == nil {
			// The GPU failed under the run: the infrastructure's fault, never the script's.
			logf.Close()
			return e.failTo(ctx, r, serr)
		}
	}
	if cerr := logf.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("log file: %w", cerr)
	}
	if ctx.Err() != nil {
		return r, ctx.Err() // shutting down: the container keeps running for the next attach
	}
	if err != nil {
		return e.failTo(ctx, r, err)
	}
	plan := judge(res, r.Spec.TimeoutSeconds, e.cfg.Limits)
	plan.GPU = gpuSummary
	if err := e.writeOutcome(r, plan); err != nil {
		return r, err
	}
	return e.store.Transition(ctx, r.ID, []store.State{store.Running}, store.Archiving, func(r *store.Run) {
		r.ExitCode, r.OOMKilled, r.TimedOut, r.LogTruncated, r.Reason = plan.ExitCode, plan.OOMKilled, plan.TimedOut, plan.LogTruncated, plan.Reason
		if !res.StartedAt.IsZero() {
			t := res.StartedAt.UTC()
			r.StartedAt = &t
		}
	})
}

func (e *Executor) sandboxSpec(r store.Run, p store.Paths) sandbox.Spec {
	env := map[string]string{}
	for k, v := range r.Spec.Env {
		env[k] = v
	}
	env["REPRO_RUN_ID"] = r.ID
	env["REPRO_OUTPUT_DIR"] = OutputDir
	env["REPRO_METRICS_FILE"] = MetricsFile
	if r.Spec.Seed != nil {
		env["REPRO_SEED"] = strconv.FormatInt(*r.Spec.Seed, 10)
	}
	return sandbox.Spec{
		RunID:     r.ID,
		Image:     r.Image,
		Command:   r.Spec.Command,
		Env:       env,
		Workspace: p.Workspace,
		Timeout:   time.Duration(r.Spec.TimeoutSeconds) * time.Second,
		StopGrace: e.cfg.StopGrace,
		User:      e.cfg.User,
		Limits:    e.cfg.Limits,
		Labels:    map[string]string{"repro.worker": e.cfg.Host, LabelInstance: e.cfg.Instance},
	}
}

// either returns a channel closed when a or b is (or never, once ctx ends).
func either(ctx context.Context, a, b <-chan struct{}) <-chan struct{} {
	out := make(chan struct{})
	go func() {
		select {
		case <-a:
		case <-b:
		case <-ctx.Done():
			return
		}
		close(out)
	}()
	return out
}

// watchCancel closes the returned channel once the run's cancel is requested. It
// polls the store, so a cancel reaches the worker from any process sharing it.
func (e *Executor) watchCancel(ctx context.Context, id string) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		t := time.NewTicker(e.cfg.CancelPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				r, err := e.store.GetRun(ctx, "", id)
				if err == nil && r.CancelRequested {
					close(ch)
					return
				}
			}
		}
	}()
	return ch
}

// judge turns a container's end into the run's outcome: the script is at fault for
// all of these, so none of them is an "error".
func judge(res sandbox.Result, timeoutSeconds int, lim sandbox.Limits) outcome {
	exit := res.ExitCode
	o := outcome{
		State: store.Failed, ExitCode: &exit, OOMKilled: res.OOMKilled, TimedOut: res.TimedOut,
		Canceled: res.Canceled, LogTruncated: res.LogTruncated, LogBytes: res.LogBytes,
	}
	if !res.StartedAt.IsZero() {
		s, f := res.StartedAt.UTC(), res.FinishedAt.UTC()
		o.StartedAt, o.FinishedAt = &s, &f
		o.DurationMs = f.Sub(s).Milliseconds()
	}
	switch {
	case res.Canceled:
		o.State, o.Reason = store.Canceled, "canceled while running"
	case res.TimedOut:
		o.Reason = fmt.Sprintf("timed out: still running after its limit of %ds; stopped", timeoutSeconds)
	case res.OOMKilled:
		o.Reason = "out of memory: killed at its memory limit"
		if lim.MemoryBytes > 0 {
			o.Reason = fmt.Sprintf("out of memory: killed at its memory limit of %d MiB", lim.MemoryBytes>>20)
		}
	case res.LogTruncated:
		o.Reason = fmt.Sprintf("output exceeded the log cap (%d bytes kept); stopped", res.LogBytes)
	case res.WorkspaceExceeded:
		o.Reason = fmt.Sprintf("workspace quota exceeded: /workspace reached its limit of %d MiB; stopped", lim.WorkspaceBytes>>20)
	case res.ExitCode != 0:
		o.Reason = fmt.Sprintf("exited with code %d", res.ExitCode)
	default:
		o.State = store.Succeeded
	}
	return o
}
