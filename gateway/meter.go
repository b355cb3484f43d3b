package gateway

import (
	"context"
	"sync"
)

// MemoryMeter is an in-memory Meter (for tests and single-process use). The
// zero value is ready to use.
type MemoryMeter struct {
	mu sync.Mutex
	m  map[string]Usage
}

// Usage returns the usage of agent run id so far.
func (m *MemoryMeter) Usage(_ context.Context, id string) (Usage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.m[id], nil
}

// Add adds u to agent run id and returns the new total.
func (m *MemoryMeter) Add(_ context.Context, id string, u Usage) (Usage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = make(map[string]Usage)
	}
	t := m.m[id].Plus(u)
	m.m[id] = t
	return t, nil
}
