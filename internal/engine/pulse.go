package engine

import (
	"slices"
	"sync"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// Pulse window sizes.
const (
	// PulseWindow is how far back the per-second counters of Pulse reach.
	PulseWindow = 5 * time.Minute
	// lagSamples is how many of the latest event→start lags Pulse keeps.
	lagSamples = 1024
)

const pulseSeconds = int(PulseWindow / time.Second)

// pulse keeps this process's live counters in memory: the runs its workers
// finished and failed, second by second over PulseWindow, and the latest
// event→start lags. Reading it costs no store call.
type pulse struct {
	mu       sync.Mutex
	second   [pulseSeconds]int64 // unix second of each bucket
	finished [pulseSeconds]int
	failed   [pulseSeconds]int
	lags     [lagSamples]time.Duration
	lagN     int // lags recorded so far (the ring holds the latest lagSamples)
}

func (p *pulse) started(lag time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lags[p.lagN%lagSamples] = max(lag, 0)
	p.lagN++
}

func (p *pulse) finish(status store.Status, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := at.Unix()
	i := int(s % int64(pulseSeconds))
	switch {
	case p.second[i] > s:
		return // older than the window
	case p.second[i] < s:
		p.second[i], p.finished[i], p.failed[i] = s, 0, 0
	}
	p.finished[i]++
	if status == store.StatusFailed {
		p.failed[i]++
	}
}

// Pulse is a snapshot of the engine's live counters for this process.
type Pulse struct {
	// At is the snapshot's time; the last bucket of each series is At's
	// second.
	At time.Time
	// Finished and Failed count the runs this process's workers finished
	// (any final status) and failed, per second, oldest first, over
	// PulseWindow.
	Finished []int
	Failed   []int
	// LagP50 and LagP99 are percentiles of the time from a run's creation to
	// its first start, over the latest LagSamples starts (none: zero).
	LagP50, LagP99 time.Duration
	LagSamples     int
}

func (p *pulse) read(now time.Time) Pulse {
	out := Pulse{At: now, Finished: make([]int, pulseSeconds), Failed: make([]int, pulseSeconds)}
	p.mu.Lock()
	cur := now.Unix()
	for k := range pulseSeconds {
		s := cur - int64(pulseSeconds-1-k)
		i := int(s % int64(pulseSeconds))
		if p.second[i] == s {
			out.Finished[k], out.Failed[k] = p.finished[i], p.failed[i]
		}
	}
	n := min(p.lagN, lagSamples)
	lags := slices.Clone(p.lags[:n])
	p.mu.Unlock()
	out.LagSamples = n
	if n > 0 {
		slices.Sort(lags)
		out.LagP50 = lags[percentileIndex(n, 50)]
		out.LagP99 = lags[percentileIndex(n, 99)]
	}
	return out
}

// percentileIndex is the nearest-rank index of the q-th percentile among n
// sorted samples.
func percentileIndex(n, q int) int {
	i := (n*q + 99) / 100
	return min(max(i-1, 0), n-1)
}

// Pulse returns the live counters of this process's workers: no store call.
func (e *Engine) Pulse() Pulse { return e.pulse.read(e.clock.Now()) }
