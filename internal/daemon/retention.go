package daemon

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// Retention deletes finished runs and events older than the retention
// period, and the completed runs of a function with a retention of its own
// (engine.Function.Retention) older than that, in small batches so intake
// never waits on it, once at start and then every quarter of the shortest
// period, at most every maxPruneEvery: nothing outlives its period by more
// than a quarter of it.
type Retention struct {
	st    store.Store
	clock clockwork.Clock
	keep  time.Duration
	// functions holds the retentions shorter than keep, by function id.
	functions map[string]time.Duration
	log       *slog.Logger
	cancel    context.CancelFunc
	done      chan struct{}
}

const (
	maxPruneEvery = 10 * time.Minute
	pruneBatch    = 500
)

// NewRetention returns the pruner; keep 0 keeps every run and event but
// the runs of functions with a retention of their own (what expires, such
// as client ids and the site's keys with a TTL, still goes).
func NewRetention(st store.Store, clock clockwork.Clock, keep time.Duration, fns []engine.Function, logger *slog.Logger) *Retention {
	r := &Retention{st: st, clock: clock, keep: keep, functions: map[string]time.Duration{}, log: logger.With("component", "retention")}
	for _, fn := range fns {
		if fn.Retention > 0 && (keep <= 0 || fn.Retention < keep) {
			r.functions[fn.ID] = fn.Retention
		}
	}
	return r
}

// every is how often the pruner runs: a quarter of the shortest period,
// at most maxPruneEvery, which is also how often it runs when it keeps
// every run and event (expired keys still go).
func (r *Retention) every() time.Duration {
	every := maxPruneEvery
	for _, keep := range append(slices.Collect(maps.Values(r.functions)), r.keep) {
		if keep > 0 {
			every = min(every, keep/4)
		}
	}
	return every
}

// Start begins pruning in the background.
func (r *Retention) Start(ctx context.Context) error {
	every := r.every()
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel, r.done = cancel, make(chan struct{})
	t := r.clock.NewTicker(every)
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
	now := r.clock.Now()
	// Keeping every run and event, Prune still deletes what has expired:
	// client ids and idempotency keys past their day, rate-limit states,
	// and on SQLite the site's keys past their TTL, which nothing else
	// deletes there. Nothing is older than the cutoff of 1970.
	cutoff := time.UnixMilli(0)
	if r.keep > 0 {
		cutoff = now.Add(-r.keep)
	}
	r.batches(ctx, "", cutoff, func(ctx context.Context) (int, error) { return r.st.Prune(ctx, cutoff, pruneBatch) })
	for _, id := range slices.Sorted(maps.Keys(r.functions)) {
		cutoff := now.Add(-r.functions[id])
		r.batches(ctx, id, cutoff, func(ctx context.Context) (int, error) {
			return r.st.PruneFunction(ctx, id, cutoff, pruneBatch)
		})
	}
}

// batches calls prune until it removes nothing, and logs what it removed
// (of function fn's completed runs when fn is not "").
func (r *Retention) batches(ctx context.Context, fn string, cutoff time.Time, prune func(context.Context) (int, error)) {
	total := 0
	for ctx.Err() == nil {
		n, err := prune(ctx)
		if err != nil {
			r.log.Warn("pruning", "function_id", fn, "err", err)
			return
		}
		total += n
		if n == 0 {
			break
		}
	}
	switch {
	case total == 0:
	case fn == "" && r.keep <= 0:
		r.log.Info("pruned expired keys", "rows", total)
	case fn == "":
		r.log.Info("pruned old runs and events", "rows", total, "before", cutoff)
	default:
		r.log.Info("pruned old completed runs of a function", "function_id", fn, "rows", total, "before", cutoff)
	}
}
