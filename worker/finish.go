package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/fault"
	"github.com/repro/repro/images"
	"github.com/repro/repro/sandbox"
	"github.com/repro/repro/sandbox/gpu"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

// outcome is result.json: how the run ended. It is written to the bundle staging
// folder before the run enters "archiving", so a restarted worker finishes it the same way.
type outcome struct {
	RunID        string       `json:"run_id"`
	State        store.State  `json:"state"`
	Reason       string       `json:"reason,omitempty"`
	ExitCode     *int         `json:"exit_code,omitempty"`
	OOMKilled    bool         `json:"oom_killed"`
	TimedOut     bool         `json:"timed_out"`
	Canceled     bool         `json:"canceled"`
	LogTruncated bool         `json:"log_truncated"`
	LogBytes     int64        `json:"log_bytes"`
	StartedAt    *time.Time   `json:"started_at,omitempty"`
	FinishedAt   *time.Time   `json:"finished_at,omitempty"`
	DurationMs   int64        `json:"duration_ms"`
	Environment  string       `json:"environment"`
	Image        string       `json:"image,omitempty"`
	ImageID      string       `json:"image_id,omitempty"`
	Worker       string       `json:"worker"`
	Score        *tasks.Score `json:"score,omitempty"`
	// GPU summarises the telemetry of the run's GPUs (telemetry.json has the samples).
	GPU *gpu.Summary `json:"gpu,omitempty"`
	// ImageArchive is where the run's image is kept (images/<id>.tar.zst), for audits.
	ImageArchive *images.ArchivedImage `json:"image_archive,omitempty"`
}

func (e *Executor) writeOutcome(r store.Run, o outcome) error {
	o.RunID, o.Environment, o.Image, o.ImageID, o.Worker = r.ID, r.Spec.Environment, r.Image, r.ImageID, e.cfg.Host
	p := store.RunPaths(e.cfg.DataDir, r.ID)
	if err := os.MkdirAll(p.Bundle, 0o755); err != nil {
		return fault.Infraf("result: %w", err)
	}
	return writeJSON(filepath.Join(p.Bundle, "result.json"), o)
}

func readOutcome(path string) (outcome, error) {
	var o outcome
	b, err := os.ReadFile(path)
	if err != nil {
		return o, err
	}
	return o, json.Unmarshal(b, &o)
}

// finish collects metrics and artifacts, archives the bundle, removes the container
// and the local files, and records the final state. Archive outages are waited out:
// the run stays "archiving" and nothing is lost.
func (e *Executor) finish(ctx context.Context, r store.Run) (store.Run, error) {
	p := store.RunPaths(e.cfg.DataDir, r.ID)
	if err := e.docker.Remove(ctx, r.ID); err != nil {
		// The engine may be the very thing that failed: archiving does not wait for
		// it; the reaper removes the container once the engine answers again.
		e.log.Warn("removing the run's container; the reaper will retry", "run", r.ID, "err", err)
	}
	o, err := readOutcome(filepath.Join(p.Bundle, "result.json"))
	if err != nil {
		o = outcome{State: store.Error, Reason: fmt.Sprintf("the run's result was lost (%v); its files are archived as found", err)}
		if err := e.writeOutcome(r, o); err != nil {
			return r, err
		}
	}
	artifacts := filepath.Join(p.Bundle, "artifacts")
	if _, err := os.Stat(filepath.Join(p.Workspace, "out")); err == nil {
		if err := os.RemoveAll(artifacts); err != nil {
			return r, fault.Infraf("artifacts: %w", err)
		}
		if err := moveTree(filepath.Join(p.Workspace, "out"), artifacts); err != nil {
			return r, fault.Infraf("artifacts: %w", err)
		}
	}
	if _, err := os.Stat(p.Log); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(p.Log, nil, 0o644); err != nil {
			return r, fault.Infraf("log: %w", err)
		}
	}
	m, err := tasks.Collect(p.Log, filepath.Join(artifacts, filepath.Base(MetricsFile)))
	if err != nil {
		if !fault.IsUser(err) {
			return r, err
		}
		// The script wrote a bad metrics file: what the log said is kept, the run fails.
		if o.State == store.Succeeded {
			o.State = store.Failed
			o.Reason = "metrics file: " + err.Error()
		}
	}
	if err := writeJSON(filepath.Join(p.Bundle, "metrics.json"), m); err != nil {
		return r, err
	}
	if t, terr := e.taskOf(r); terr == nil && o.State == store.Succeeded {
		o.Score = e.score(t, m)
		if o.Score != nil && !o.Score.Valid {
			// Missing the task's target is the script's failure (DESIGN: "failed").
			o.State, o.Reason = store.Failed, "missed the task's target: "+o.Score.Reason
		}
	} else if terr == nil && t != nil {
		o.Score = &tasks.Score{Task: t.ID, Profile: e.cfg.Profile, TargetValLoss: t.TargetValLoss, Reason: "the run did not succeed: " + o.Reason}
	}
	if o.ImageArchive == nil && r.ImageID != "" {
		err := e.retryArchive(ctx, r, func() (err error) {
			o.ImageArchive, err = e.archiveImage(ctx, r.ImageID)
			return err
		})
		if err != nil {
			return r, err
		}
	}
	if err := e.writeOutcome(r, o); err != nil {
		return r, err
	}
	var bundle archive.Bundle
	err = e.retryArchive(ctx, r, func() (err error) {
		bundle, err = archive.UploadBundle(ctx, e.archive, r.ID, p.Bundle, e.fingerprint(r, p))
		return err
	})
	if err != nil {
		return r, err
	}
	metrics, err := json.Marshal(m)
	if err != nil {
		return r, err
	}
	var score json.RawMessage
	if o.Score != nil {
		if score, err = json.Marshal(o.Score); err != nil {
			return r, err
		}
	}
	r, err = e.store.Transition(ctx, r.ID, []store.State{store.Archiving}, o.State, func(r *store.Run) {
		r.Reason, r.Metrics, r.Score = o.Reason, metrics, score
		r.BundleLocation, r.ManifestSHA256 = bundle.Location, bundle.ManifestSHA256
	})
	if err != nil {
		return r, err
	}
	if err := sandbox.ReleaseWorkspace(p.Workspace); err != nil {
		e.log.Warn("releasing the run's workspace", "run", r.ID, "err", err)
	} else if err := os.RemoveAll(p.Root); err != nil {
		e.log.Warn("removing local run files", "run", r.ID, "err", err)
	}
	return r, nil
}

// fingerprint names the environment a run ran in, for its manifest.
func (e *Executor) fingerprint(r store.Run, p store.Paths) archive.Fingerprint {
	fp := archive.Fingerprint{
		ImageID:      r.ImageID,
		Environment:  r.Spec.Environment,
		ScriptSHA256: scriptSHA256(p.Submission, r.Spec.Command),
		Host:         e.cfg.Host,
		ReproVersion: e.cfg.Version,
	}
	if r.Spec.Seed != nil {
		fp.Seed = *r.Spec.Seed
	}
	if t, err := e.taskOf(r); err == nil && t != nil && t.Dataset != "" {
		// The digest of the dataset's SHA256SUMS, written into .complete when the
		// dataset was verified (or made).
		if b, err := os.ReadFile(filepath.Join(e.datasetDir(t.Dataset), ".complete")); err == nil {
			fp.DatasetManifestSHA256 = strings.TrimSpace(string(b))
		}
	}
	g := gpuFingerprint(p)
	fp.GPUModels, fp.GPUUUIDs, fp.DriverVersion, fp.CUDAVersion = g.GPUModels, g.GPUUUIDs, g.DriverVersion, g.CUDAVersion
	return fp
}

// retryArchive runs op (an archive write) until it succeeds, retrying with back-off
// while the archive is unreachable; the run's reason says so meanwhile, and its
// files stay in the local staging folder.
func (e *Executor) retryArchive(ctx context.Context, r store.Run, op func() error) error {
	wait := e.cfg.ArchiveRetry
	for {
		err := op()
		if err == nil || fault.IsUser(err) || errors.Is(err, archive.ErrSealed) || ctx.Err() != nil {
			return err
		}
		e.log.Warn("archive unreachable; keeping the bundle locally and retrying", "run", r.ID, "in", wait, "err", err)
		_, _ = e.store.UpdateRun(ctx, r.ID, func(r *store.Run) error {
			r.Reason = "archive unreachable, bundle kept locally, retrying: " + err.Error()
			return nil
		})
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Minute)
	}
}

// scriptSHA256 hashes the first command argument that names a submitted file (the
// script), or "" when none does.
func scriptSHA256(submission string, command []string) string {
	for _, arg := range command {
		f, err := os.Open(filepath.Join(submission, filepath.Clean("/"+arg)))
		if err != nil {
			continue
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err == nil {
			return hex.EncodeToString(h.Sum(nil))
		}
	}
	return ""
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fault.Infraf("write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fault.Infraf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// moveTree moves src to dst: a rename, or a copy and a removal when they are on
// different filesystems (a capped workspace is a filesystem of its own).
func moveTree(src, dst string) error {
	err := os.Rename(src, dst)
	if !errors.Is(err, syscall.EXDEV) {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := copyTree(src, dst); err != nil {
		return err
	}
	return os.RemoveAll(src)
}
