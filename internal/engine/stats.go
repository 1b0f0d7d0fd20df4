package engine

import (
	"sync"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// statsBook keeps per-function counters of finished runs in one-minute
// buckets over the last hour, fed by the store's change stream, so listing
// functions costs no store query.
type statsBook struct {
	mu  sync.Mutex
	fns map[string]*fnStats
}

type fnStats struct {
	minute     [60]int64 // unix minute of each bucket
	runs       [60]int
	failures   [60]int
	lastStatus store.Status
	lastAt     time.Time
}

func newStatsBook() *statsBook { return &statsBook{fns: map[string]*fnStats{}} }

func (b *statsBook) record(fn string, status store.Status, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.fns[fn]
	if s == nil {
		s = &fnStats{}
		b.fns[fn] = s
	}
	m := at.Unix() / 60
	i := m % 60
	if s.minute[i] != m {
		s.minute[i], s.runs[i], s.failures[i] = m, 0, 0
	}
	s.runs[i]++
	if status == store.StatusFailed {
		s.failures[i]++
	}
	if !at.Before(s.lastAt) {
		s.lastStatus, s.lastAt = status, at
	}
}

func (b *statsBook) read(fn string, now time.Time) FunctionStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.fns[fn]
	if s == nil {
		return FunctionStats{}
	}
	out := FunctionStats{LastStatus: s.lastStatus, LastRunAt: s.lastAt}
	cur := now.Unix() / 60
	for i := range s.minute {
		if cur-s.minute[i] < 60 {
			out.RunsLastHour += s.runs[i]
			out.FailuresLastHour += s.failures[i]
		}
	}
	return out
}

// watchStats feeds the stats book from the change stream until it closes.
func (e *Engine) watchStats(changes <-chan store.Change) {
	for c := range changes {
		if c.Kind == store.ChangeRun && c.Status.Finished() {
			e.stats.record(c.FunctionID, c.Status, c.At)
		}
	}
}
