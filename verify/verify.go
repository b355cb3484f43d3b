// Package verify drives the campaigns that judge runs: verifications of record
// claims (a candidate and its baseline run N times each, interleaved A/B on the
// same worker, judged with tasks.DecideVerdict) and audits (archived runs re-run
// with their archived image, files, seed and environment, and compared).
//
// A campaign's plan is derived from the store's runs every time it is looked at,
// so a restart resumes it where it was: nothing is kept only in memory. Every
// run is an ordinary run of the queue (same sandbox, image, data, scoring),
// linked to its campaign. Reports are sealed in the archive (archive.PutSealed).
package verify

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/repro/repro/archive"
	"github.com/repro/repro/fault"
	"github.com/repro/repro/sandbox/gpu"
	"github.com/repro/repro/store"
	"github.com/repro/repro/tasks"
)

// Config configures the campaigns of one service.
type Config struct {
	DataDir   string
	Tasks     *tasks.Catalog
	TaskStore string // synced task files (the baseline scripts)
	// Profile is the hardware profile of this service's workers: verifications and
	// audits run there, and only there.
	Profile string
	Version string
	// Poll is how often a campaign looks at its current run (default 250 ms: a
	// verification of short runs would otherwise idle between them).
	Poll time.Duration
	// ErrorRetries is how often a run that ended "error" (the infrastructure's
	// fault) is run again, with the same seed (default 2).
	ErrorRetries int
	// GPUCheck refuses a task whose GPUs no worker here could give (nil: no check).
	GPUCheck func(gpu.Request) error
}

// InputError is a request a campaign cannot start from, naming the field: the
// caller's fault.
type InputError struct {
	Field  string
	Reason string
}

func (e *InputError) Error() string { return e.Field + ": " + e.Reason }

func inputErr(field, format string, args ...any) error {
	return fault.AsUser(&InputError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// Service starts and resumes campaigns.
type Service struct {
	cfg     Config
	store   *store.Store
	archive archive.Store
	log     *slog.Logger

	mu        sync.Mutex
	attemptMu sync.Mutex // SubmitAttempt's budget check and creation are one step
	running   map[string]bool
	wg        sync.WaitGroup
	ctx       context.Context
}

// New makes the service; Start launches its campaigns.
func New(cfg Config, st *store.Store, ar archive.Store, log *slog.Logger) *Service {
	if cfg.Poll <= 0 {
		cfg.Poll = 250 * time.Millisecond
	}
	if cfg.ErrorRetries == 0 {
		cfg.ErrorRetries = 2
	}
	if log == nil {
		log = slog.Default()
	}
	return &Service{cfg: cfg, store: st, archive: ar, log: log, running: map[string]bool{}}
}

// Start resumes every unfinished campaign; campaigns started later run under ctx
// too. Wait returns when they have all stopped (ctx canceled or finished).
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	for _, kind := range []store.CampaignKind{store.KindVerification, store.KindAudit, store.KindAgent} {
		cs, err := s.store.UnfinishedCampaigns(ctx, kind)
		if err != nil {
			return err
		}
		for _, c := range cs {
			s.log.Info("resuming "+string(kind), "id", c.ID)
			s.launch(c)
		}
	}
	return nil
}

// Wait waits for the campaigns' goroutines.
func (s *Service) Wait() { s.wg.Wait() }

// launch drives campaign c in its own goroutine, once.
func (s *Service) launch(c store.Campaign) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[c.ID] || s.ctx == nil {
		return
	}
	s.running[c.ID] = true
	ctx := s.ctx
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.running, c.ID)
			s.mu.Unlock()
		}()
		var drive func(context.Context, string) error
		switch c.Kind {
		case store.KindVerification:
			drive = s.driveVerification
		case store.KindAudit:
			drive = s.driveAudit
		case store.KindAgent:
			drive = s.driveAgent
		default:
			return
		}
		s.retry(ctx, c, drive)
	}()
}

// retry drives a campaign until it ends, retrying with back-off while the
// infrastructure fails (store or archive down); the campaign's reason says so.
func (s *Service) retry(ctx context.Context, c store.Campaign, drive func(context.Context, string) error) {
	wait := time.Second
	for {
		err := drive(ctx, c.ID)
		if err == nil || ctx.Err() != nil {
			return
		}
		s.log.Warn(string(c.Kind)+" interrupted; retrying", "id", c.ID, "err", err, "in", wait)
		_, _ = s.store.UpdateCampaign(ctx, c.ID, func(c *store.Campaign) error {
			c.Reason = "waiting to retry after an infrastructure fault: " + err.Error()
			return nil
		})
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

// Cancel asks a campaign to stop: its current run is canceled and the campaign
// ends "canceled". A finished campaign is left as it is.
func (s *Service) Cancel(ctx context.Context, kind store.CampaignKind, teamID, id string) (store.Campaign, error) {
	if _, err := s.store.GetCampaign(ctx, kind, teamID, id); err != nil {
		return store.Campaign{}, err
	}
	return s.store.UpdateCampaign(ctx, id, func(c *store.Campaign) error {
		if !c.State.Terminal() {
			c.CancelRequested = true
		}
		return nil
	})
}

// campaignDir holds a campaign's staged files (the sides' submissions).
func (s *Service) campaignDir(id string) string {
	return store.CampaignDir(s.cfg.DataDir, id)
}

// newSeed draws a seed not in used.
func newSeed(used map[int64]bool) int64 {
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		seed := int64(binary.LittleEndian.Uint64(b[:]) >> 33)
		if !used[seed] {
			return seed
		}
	}
}

// submit creates one run of a campaign from the files in dir (copied, so that
// the campaign's own copy stays for later runs).
func (s *Service) submit(ctx context.Context, c store.Campaign, dir string, r store.Run) (store.Run, error) {
	r.ID = uuid.NewString()
	r.TeamID, r.ParentID = c.TeamID, c.ID
	paths := store.RunPaths(s.cfg.DataDir, r.ID)
	if err := copyDir(dir, paths.Submission); err != nil {
		os.RemoveAll(paths.Root)
		return store.Run{}, fault.Infraf("%s %s: stage run files: %w", c.Kind, c.ID, err)
	}
	created, err := s.store.CreateRun(ctx, r)
	if err != nil {
		os.RemoveAll(paths.Root)
		return store.Run{}, err
	}
	s.log.Info(string(c.Kind)+" run submitted", "campaign", c.ID, "run", r.ID, "side", r.Side, "pair", r.Pair, "seed", *r.Spec.Seed)
	return created, nil
}

// waitRun waits until run id has ended, or the campaign is asked to stop
// (stopped true: the run was asked to cancel, and has ended or not).
func (s *Service) waitRun(ctx context.Context, campaignID, id string) (r store.Run, stopped bool, err error) {
	for {
		r, err := s.store.GetRun(ctx, "", id)
		if err != nil {
			return r, false, err
		}
		if r.State.Terminal() {
			return r, false, nil
		}
		c, err := s.store.GetCampaign(ctx, "", "", campaignID)
		if err == nil && c.CancelRequested {
			_, err := s.store.RequestCancel(ctx, "", id)
			return r, true, err
		}
		select {
		case <-ctx.Done():
			return r, false, ctx.Err()
		case <-time.After(s.cfg.Poll):
		}
	}
}

// cancelCampaign ends a campaign canceled, canceling its unfinished runs.
func (s *Service) cancelCampaign(ctx context.Context, c store.Campaign) error {
	runs, err := s.store.RunsOf(ctx, c.ID)
	if err != nil {
		return err
	}
	for _, r := range runs {
		if !r.State.Terminal() {
			if _, err := s.store.RequestCancel(ctx, "", r.ID); err != nil {
				return err
			}
		}
	}
	_, err = s.store.UpdateCampaign(ctx, c.ID, func(c *store.Campaign) error {
		c.State, c.Reason = store.CampaignCanceled, "canceled on request"
		return nil
	})
	if err == nil {
		s.log.Info(string(c.Kind)+" canceled", "id", c.ID)
		os.RemoveAll(s.campaignDir(c.ID))
	}
	return err
}

// setProgress stores the campaign's progress document.
func (s *Service) setProgress(ctx context.Context, id string, p any) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = s.store.UpdateCampaign(ctx, id, func(c *store.Campaign) error {
		c.Progress, c.Reason = b, ""
		return nil
	})
	return err
}

// seal archives a campaign's report (JSON and Markdown) once and records it:
// the campaign is done with its outcome.
func (s *Service) seal(ctx context.Context, c store.Campaign, outcome string, report any, markdown string) (store.Campaign, error) {
	data, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		return c, err
	}
	data = append(data, '\n')
	if _, err := archive.PutSealed(ctx, s.archive, ReportKey(c.Kind, c.ID, "report.json"), data); err != nil {
		return c, fault.Infraf("%s %s: archive the report: %w", c.Kind, c.ID, err)
	}
	if _, err := archive.PutSealed(ctx, s.archive, ReportKey(c.Kind, c.ID, "report.md"), []byte(markdown)); err != nil {
		return c, fault.Infraf("%s %s: archive the report: %w", c.Kind, c.ID, err)
	}
	c, err = s.store.UpdateCampaign(ctx, c.ID, func(c *store.Campaign) error {
		c.State, c.Outcome, c.Report, c.ReportLocation, c.Reason = store.CampaignDone, outcome, data, s.archive.Location(ReportKey(c.Kind, c.ID, "")), ""
		return nil
	})
	if err != nil {
		return c, err
	}
	s.log.Info(string(c.Kind)+" done", "id", c.ID, "outcome", outcome, "report", c.ReportLocation)
	os.RemoveAll(s.campaignDir(c.ID))
	return c, nil
}

// failCampaign ends a campaign "error": the infrastructure could not carry it out.
func (s *Service) failCampaign(ctx context.Context, id, reason string) error {
	_, err := s.store.UpdateCampaign(ctx, id, func(c *store.Campaign) error {
		c.State, c.Reason = store.CampaignError, reason
		return nil
	})
	if err == nil {
		os.RemoveAll(s.campaignDir(id)) // as seal and cancelCampaign do: nothing will run from it again
	}
	return err
}

// ReportKey is where a campaign's report file is archived.
func ReportKey(kind store.CampaignKind, id, name string) string {
	return string(kind) + "s/" + id + "/" + name
}

func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

// fetchSubmission stages an archived run's submitted files in dir, verified
// against the run's sealed manifest.
func (s *Service) fetchSubmission(ctx context.Context, runID, dir string) (archive.Manifest, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return archive.Manifest{}, fault.Infraf("stage files: %w", err)
	}
	m, err := archive.FetchFiles(ctx, s.archive, runID, "submission/", dir)
	if err != nil {
		os.RemoveAll(dir)
	}
	return m, err
}

// corrupt reports whether err says archived content no longer matches its record.
func corrupt(err error) bool { return errors.Is(err, archive.ErrCorrupt) }
