// Package worker drives runs through their life on one host: it takes a run from
// the queue, prepares its workspace, runs it in the sandbox, parses its metrics,
// archives its bundle and records the outcome. It is the only package that joins
// sandbox, tasks and archive; every state change is persisted before it is acted
// on, so a restarted worker picks each run up where it was.
package worker

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/fault"
	"github.com/repro/repro/sandbox"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

// LabelInstance marks each container with the deployment that made it.
const LabelInstance = "repro.instance"

// Container paths and variables every run sees.
const (
	WorkspaceDir = "/workspace"
	OutputDir    = "/workspace/out"
	MetricsFile  = "/workspace/out/metrics.jsonl"
)

// Config is the worker's host-level configuration.
type Config struct {
	DataDir      string
	Environments map[string]string // name → image reference
	Limits       sandbox.Limits    // per-run resource limits (zero fields take sandbox defaults)
	StopGrace    time.Duration     // SIGTERM → SIGKILL
	User         string            // container user (uid:gid); the workspace is chowned to it
	Host         string            // this worker's name, recorded on runs and in fingerprints
	Instance     string            // this deployment's ID (one per data dir): the reaper only touches its own containers
	Version      string            // repro version, recorded in fingerprints
	CancelPoll   time.Duration     // how often a running run checks for a cancel request
	Tasks        *tasks.Catalog    // the task catalogue (nil: task runs end in error)
	RefsDir      string            // calibrated reference times (tasks.LoadRefs)
	Profile      string            // this worker's hardware profile: scores are per profile
	Images       *Images           // the environment catalogue (nil: registered environments only)
	GPUs         *GPUs             // the node's GPUs (nil: a CPU-only worker)
	Telemetry    time.Duration     // GPU sampling interval (default 1s)
	ArchiveRetry time.Duration     // first back-off when the archive is unreachable
	Agents       *Agents           // how agent containers reach repro (nil: no agent runs)
}

// Executor runs runs. One per process.
type Executor struct {
	cfg     Config
	store   *store.Store
	docker  *sandbox.Docker
	archive archive.Store
	log     *slog.Logger

	mu   sync.Mutex
	busy map[string]bool
	wg   sync.WaitGroup
}

// New returns an executor; call Recover once before the queue starts.
func New(cfg Config, st *store.Store, docker *sandbox.Docker, ar archive.Store, log *slog.Logger) *Executor {
	if cfg.CancelPoll <= 0 {
		cfg.CancelPoll = 500 * time.Millisecond
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 10 * time.Second
	}
	if cfg.User == "" {
		cfg.User = "65534:65534"
	}
	if cfg.Telemetry <= 0 {
		cfg.Telemetry = time.Second
	}
	if cfg.ArchiveRetry <= 0 {
		cfg.ArchiveRetry = 2 * time.Second
	}
	if cfg.Host == "" {
		cfg.Host, _ = os.Hostname()
	}
	if log == nil {
		log = slog.Default()
	}
	return &Executor{cfg: cfg, store: st, docker: docker, archive: ar, log: log, busy: map[string]bool{}}
}

// Image returns the image of a registered environment.
func (e *Executor) Image(env string) (string, bool) {
	img, ok := e.cfg.Environments[env]
	return img, ok
}

// RunWorker is the River worker for store.RunArgs jobs.
type RunWorker struct {
	river.WorkerDefaults[store.RunArgs]
	Exec *Executor
}

// Work drives one run. Infrastructure faults before the script started are returned
// so that River retries the job; everything else is recorded on the run itself.
func (w *RunWorker) Work(ctx context.Context, job *river.Job[store.RunArgs]) error {
	err := w.Exec.Execute(ctx, job.Args.RunID, job.Attempt >= job.MaxAttempts)
	if err != nil && !errors.Is(err, errRetry) && ctx.Err() == nil {
		w.Exec.log.Error("run job", "run", job.Args.RunID, "err", err)
	}
	return err
}

// errRetry marks a preparation fault that the queue should retry.
var errRetry = errors.New("retry")

// Recover finds what a previous process left: runs it held (re-attached or finalized
// in the background) and repro containers whose run is over or unknown (removed).
func (e *Executor) Recover(ctx context.Context) error {
	runs, err := e.store.ActiveRuns(ctx)
	if err != nil {
		return err
	}
	for _, r := range runs {
		e.log.Info("recovering run", "run", r.ID, "state", r.State)
		e.wg.Add(1)
		go func(id string) {
			defer e.wg.Done()
			if err := e.Execute(ctx, id, true); err != nil && ctx.Err() == nil {
				e.log.Error("recover run", "run", id, "err", err)
			}
		}(r.ID)
	}
	return e.Reap(ctx)
}

// Reap removes repro containers whose run has ended or is unknown, and local files
// that no active run needs.
func (e *Executor) Reap(ctx context.Context) error {
	cs, err := e.docker.List(ctx)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if c.Labels[LabelInstance] != e.cfg.Instance {
			continue // another repro on the same engine owns it
		}
		r, err := e.store.GetRun(ctx, "", c.RunID)
		if err == nil && !r.State.Terminal() {
			continue
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		e.log.Info("reaping container", "container", c.ID, "run", c.RunID)
		if err := e.docker.Remove(ctx, c.RunID); err != nil {
			return err
		}
	}
	if err := e.reapFiles(ctx); err != nil {
		return err
	}
	return e.gcImages(ctx)
}

// Wait waits for recovery goroutines (used at shutdown).
func (e *Executor) Wait() { e.wg.Wait() }

func (e *Executor) claim(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.busy[id] {
		return false
	}
	e.busy[id] = true
	return true
}

func (e *Executor) release(id string) {
	e.mu.Lock()
	delete(e.busy, id)
	e.mu.Unlock()
}

// Execute drives run id from whatever state it is in to the end. lastAttempt says
// whether a preparation fault should end the run (true) or be retried (false).
func (e *Executor) Execute(ctx context.Context, id string, lastAttempt bool) error {
	if !e.claim(id) {
		return nil // another goroutine of this process drives it
	}
	defer e.release(id)
	r, err := e.store.GetRun(ctx, "", id)
	if err != nil {
		return err
	}
	log := e.log.With("run", id)
	for !r.State.Terminal() {
		prev := r.State
		switch r.State {
		case store.Queued:
			r, err = e.store.Transition(ctx, id, []store.State{store.Queued}, store.Preparing, func(r *store.Run) {
				r.Worker, r.Reason = e.cfg.Host, ""
			})
		case store.Preparing:
			r, err = e.prepare(ctx, r, lastAttempt)
		case store.Running:
			r, err = e.run(ctx, r)
		case store.Archiving:
			r, err = e.finish(ctx, r)
		}
		if err != nil {
			if errors.Is(err, store.ErrConflict) {
				// Someone else moved it (e.g. canceled while queued): look again.
				if r, err = e.store.GetRun(ctx, "", id); err != nil {
					return err
				}
				continue
			}
			return err
		}
		if r.State != prev {
			log.Info("run state", "from", prev, "to", r.State, "reason", r.Reason)
		}
	}
	return nil
}

// failTo ends a run as error (infrastructure) or failed (user), from any active state,
// cleaning up its container. The bundle is still archived by finish.
func (e *Executor) failTo(ctx context.Context, r store.Run, err error) (store.Run, error) {
	st := store.Error
	if fault.IsUser(err) {
		st = store.Failed
	}
	plan := outcome{State: st, Reason: err.Error()}
	if werr := e.writeOutcome(r, plan); werr != nil {
		return r, werr
	}
	return e.store.Transition(ctx, r.ID, []store.State{r.State}, store.Archiving, func(r *store.Run) {
		r.Reason = plan.Reason
	})
}
