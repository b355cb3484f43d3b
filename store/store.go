// Package store owns repro's persistent state (teams, tokens, runs) and its job
// queue. State lives in SQLite under the data directory; jobs are dispatched by River
// using the same database, so a run row and its job are written in one transaction.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/repro/repro/fault"
)

var (
	// ErrNotFound: no such row (or not visible to the caller).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the row exists already, or is not in a state that allows the change.
	ErrConflict = errors.New("conflict")
	// ErrUnauthorized: unknown or revoked token.
	ErrUnauthorized = errors.New("unauthorized")
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options configure Open.
type Options struct {
	// DataDir holds repro.db; created if missing.
	DataDir string
	// Workers are the River workers this process runs; nil for a process that only inserts.
	Workers *river.Workers
	// Concurrency is how many jobs run at once in this process (default 1).
	Concurrency int
	// AgentConcurrency is how many agent containers run at once (queue "agents",
	// default 4): they wait on their attempts, which need the default queue's slots.
	AgentConcurrency int
	// MaxJobTime bounds a job's run time; River rescues jobs stuck longer than this plus an hour.
	MaxJobTime time.Duration
	Logger     *slog.Logger
}

// Store is the state database and the queue.
type Store struct {
	db    *sql.DB
	river *river.Client[*sql.Tx]
	log   *slog.Logger
}

// Open opens (creating and migrating as needed) the database under opts.DataDir.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 1
	}
	if opts.MaxJobTime <= 0 {
		opts.MaxJobTime = 25 * time.Hour
	}
	if err := os.MkdirAll(opts.DataDir, 0o750); err != nil {
		return nil, fault.Infraf("store: data dir: %w", err)
	}
	path := filepath.Join(opts.DataDir, "repro.db")
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fault.Infraf("store: open %s: %w", path, err)
	}
	// SQLite allows one writer; River's SQLite driver asks for a single connection.
	db.SetMaxOpenConns(1)
	s := &Store{db: db, log: opts.Logger}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	cfg := &river.Config{
		Logger:               opts.Logger.With("component", "river"),
		MaxAttempts:          3,
		JobTimeout:           -1, // each worker sets its own from the run's limit
		RescueStuckJobsAfter: opts.MaxJobTime + time.Hour,
		// The SQLite driver's listener sees an insert within ~50ms; polling is the fallback.
		FetchPollInterval: time.Second,
		FetchCooldown:     20 * time.Millisecond,
	}
	if opts.Workers != nil {
		cfg.Workers = opts.Workers
		if opts.AgentConcurrency <= 0 {
			opts.AgentConcurrency = 4
		}
		cfg.Queues = map[string]river.QueueConfig{
			river.QueueDefault: {MaxWorkers: opts.Concurrency},
			QueueAgents:        {MaxWorkers: opts.AgentConcurrency},
		}
	}
	rc, err := river.NewClient(riversqlite.New(db), cfg)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: river client: %w", err)
	}
	s.river = rc
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	m, err := rivermigrate.New(riversqlite.New(s.db), nil)
	if err != nil {
		return fmt.Errorf("store: river migrator: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fault.Infraf("store: river migrations: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS repro_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
		return fault.Infraf("store: migrations table: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM repro_migrations WHERE name = ?`, name).Scan(&n); err != nil {
			return fault.Infraf("store: migrations: %w", err)
		}
		if n > 0 {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		err = s.tx(ctx, func(tx *sql.Tx) error {
			for _, stmt := range strings.Split(string(body), ";") {
				if strings.TrimSpace(stmt) == "" {
					continue
				}
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO repro_migrations (name, applied_at) VALUES (?, ?)`, name, fmtTime(time.Now()))
			return err
		})
		if err != nil {
			return fault.Infraf("store: migrate: %w", err)
		}
		s.log.Info("applied migration", "name", name)
	}
	return nil
}

// Start starts working jobs (when Workers were given).
func (s *Store) Start(ctx context.Context) error {
	if err := s.river.Start(ctx); err != nil {
		return fault.Infraf("store: start queue: %w", err)
	}
	return nil
}

// Close stops the queue (letting running jobs see their context canceled) and closes the database.
func (s *Store) Close(ctx context.Context) error {
	var errs []error
	if err := s.river.StopAndCancel(ctx); err != nil && !strings.Contains(err.Error(), "not started") {
		errs = append(errs, err)
	}
	errs = append(errs, s.db.Close())
	return errors.Join(errs...)
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.db.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fault.Infraf("store: %w", err)
	}
	return nil
}

func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

const timeFormat = time.RFC3339Nano

func fmtTime(t time.Time) string { return t.UTC().Format(timeFormat) }

func fmtTimePtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return fmtTime(*t)
}

func parseTime(s string) (time.Time, error) { return time.Parse(timeFormat, s) }
