package engine

import (
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

func TestPulseBucketsAndPercentiles(t *testing.T) {
	t.Parallel()
	var p pulse
	t0 := time.Unix(1_700_000_000, 0)
	p.finish(store.StatusCompleted, t0)
	p.finish(store.StatusFailed, t0)
	p.finish(store.StatusCompleted, t0.Add(2*time.Second))
	// A finish older than the window is dropped.
	p.finish(store.StatusFailed, t0.Add(-PulseWindow))

	got := p.read(t0.Add(2 * time.Second))
	n := len(got.Finished)
	if n != pulseSeconds || len(got.Failed) != pulseSeconds {
		t.Fatalf("series lengths %d, %d, want %d", n, len(got.Failed), pulseSeconds)
	}
	if got.Finished[n-1] != 1 || got.Finished[n-2] != 0 || got.Finished[n-3] != 2 {
		t.Errorf("finished tail = %v, want [2 0 1]", got.Finished[n-3:])
	}
	if got.Failed[n-3] != 1 {
		t.Errorf("failed at t0 = %d, want 1", got.Failed[n-3])
	}
	total := 0
	for _, v := range got.Failed {
		total += v
	}
	if total != 1 {
		t.Errorf("failures in window = %d, want 1 (the one outside the window dropped)", total)
	}
	later := p.read(t0.Add(PulseWindow + 3*time.Second))
	for i, v := range later.Finished {
		if v != 0 {
			t.Fatalf("bucket %d = %d after the window passed, want 0", i, v)
		}
	}

	if got.LagSamples != 0 || got.LagP50 != 0 {
		t.Errorf("lag with no sample = %v/%d", got.LagP50, got.LagSamples)
	}
	for i := 1; i <= 100; i++ {
		p.started(time.Duration(i) * time.Millisecond)
	}
	got = p.read(t0)
	if got.LagP50 != 50*time.Millisecond || got.LagP99 != 99*time.Millisecond || got.LagSamples != 100 {
		t.Errorf("lag p50 %v p99 %v over %d, want 50ms 99ms over 100", got.LagP50, got.LagP99, got.LagSamples)
	}
	// The ring keeps only the latest lagSamples.
	for range lagSamples {
		p.started(time.Second)
	}
	if got = p.read(t0); got.LagP50 != time.Second || got.LagSamples != lagSamples {
		t.Errorf("after a full ring: p50 %v over %d", got.LagP50, got.LagSamples)
	}
}
