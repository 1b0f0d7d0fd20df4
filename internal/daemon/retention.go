package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// Retention deletes finished runs and events older than the retention
// period, in small batches so intake never waits on it, once at start and
// then every quarter of the period, at most every maxPruneEvery: nothing
// outlives the period by more than a quarter of it.
type Retention struct {
	st     store.Store
	clock  clockwork.Clock
	keep   time.Duration
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

const (
	maxPruneEvery = 10 * time.Minute
	pruneBatch    = 500
)

// NewRetention returns the pruner; keep 0 keeps everything.
func NewRetention(st store.Store, clock clockwork.Clock, keep time.Duration, logger *slog.Logger) *Retention {
	return &Retention{st: st, clock: clock, keep: keep, log: logger.With("component", "retention")}
}

// Start begins pruning in the background.
func (r *Retention) Start(ctx context.Context) error {
	if r.keep <= 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel, r.done = cancel, make(chan struct{})
	t := r.clock.NewTicker(min(maxPruneEvery, r.keep/4))
	go func() {
		defer close(r.done)
		defer t.Stop()
		for {
			r.prune(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.Chan():
			}
		}
	}()
	return nil
}

// Stop ends pruning.
func (r *Retention) Stop(ctx context.Context) error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Retention) prune(ctx context.Context) {
	cutoff := r.clock.Now().Add(-r.keep)
	total := 0
	for ctx.Err() == nil {
		n, err := r.st.Prune(ctx, cutoff, pruneBatch)
		if err != nil {
			r.log.Warn("pruning", "err", err)
			return
		}
		total += n
		if n == 0 {
			break
		}
	}
	if total > 0 {
		r.log.Info("pruned old runs and events", "rows", total, "before", cutoff)
	}
}
