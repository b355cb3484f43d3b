package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// TrajectoryFile is the name of the trajectory in an agent run's directory.
const TrajectoryFile = "trajectory.jsonl"

// FileTrajectory appends every exchange as one JSON object per line to
// <Dir(agentRunID)>/trajectory.jsonl, creating the directory if needed. Each
// line is written with a single write and fsync'ed before Record returns;
// writers of the same file are serialized by a mutex per file. Use it by
// pointer (&FileTrajectory{Dir: ...}); it must not be copied after first use.
type FileTrajectory struct {
	Dir func(agentRunID string) string

	mu    sync.Mutex
	files map[string]*sync.Mutex
}

// Record appends e to the trajectory of agent run agentRunID.
func (t *FileTrajectory) Record(_ context.Context, agentRunID string, e Exchange) error {
	if t.Dir == nil {
		return errors.New("gateway: FileTrajectory.Dir is nil")
	}
	dir := t.Dir(agentRunID)
	if dir == "" {
		return fmt.Errorf("gateway: no trajectory directory for agent run %q", agentRunID)
	}
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("gateway: encode exchange: %w", err)
	}
	line = append(line, '\n')
	path := filepath.Join(dir, TrajectoryFile)

	fmu := t.fileLock(path)
	fmu.Lock()
	defer fmu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("gateway: trajectory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("gateway: trajectory: %w", err)
	}
	_, werr := f.Write(line)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("gateway: trajectory %s: %w", path, err)
	}
	return nil
}

func (t *FileTrajectory) fileLock(path string) *sync.Mutex {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.files == nil {
		t.files = make(map[string]*sync.Mutex)
	}
	m := t.files[path]
	if m == nil {
		m = new(sync.Mutex)
		t.files[path] = m
	}
	return m
}
