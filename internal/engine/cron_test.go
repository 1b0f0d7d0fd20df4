package engine_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// TestCronTickSurvivesTheDeathOfItsTaker runs two daemons' schedulers on
// one store. The first to write anything for a tick dies right after that
// write (its store fails every later call); the second writes only then.
// The tick must still end up with exactly one run.
func TestCronTickSurvivesTheDeathOfItsTaker(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		fn := engine.Function{
			ID: "every-minute", Triggers: []engine.Trigger{{Cron: "* * * * *"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil },
		}
		b := setup(t, be, options{noPool: true}, fn)
		tick := start.Truncate(time.Minute).Add(time.Minute)
		first := newTickStore(b.st, tick, nil, true)
		second := newTickStore(b.st, tick, first.wrote, false)
		for _, st := range []store.Store{first, second} {
			eng, err := engine.New(engine.Options{Store: st, Clock: b.clock})
			if err != nil {
				t.Fatal(err)
			}
			if err := eng.Register(fn); err != nil {
				t.Fatal(err)
			}
			s := engine.NewScheduler(eng)
			if err := s.Start(b.ctx); err != nil {
				t.Fatal(err)
			}
			defer s.Stop(b.ctx)
		}
		b.clock.BlockUntilContext(b.ctx, 2)
		b.clock.Advance(tick.Sub(start))
		select {
		case <-second.wrote:
		case <-time.After(10 * time.Second):
			t.Fatal("the second scheduler never wrote for the tick")
		}
		page, err := b.st.ListRuns(b.ctx, store.RunFilter{FunctionID: fn.ID})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != 1 {
			t.Fatalf("%d runs for the tick whose first taker died, want 1", len(page.Items))
		}
	})
}

// tickStore is one daemon's view of a shared store. Its writes that name
// the tick (a key or an event id containing "<function>:<unix>") wait for
// wait (when set); once the first of them returns, wrote closes and, when
// die is set, the daemon is dead: every later write fails.
type tickStore struct {
	store.Store
	tick  string
	wait  <-chan struct{}
	wrote chan struct{}
	die   bool
	once  sync.Once
	dead  atomic.Bool
}

func newTickStore(st store.Store, tick time.Time, wait <-chan struct{}, die bool) *tickStore {
	return &tickStore{Store: st, tick: "every-minute:" + strconv.FormatInt(tick.Unix(), 10), wait: wait, wrote: make(chan struct{}), die: die}
}

// write runs w unless the daemon is dead, holding it for wait when it
// names the tick.
func (s *tickStore) write(ctx context.Context, name string, w func() error) error {
	if s.dead.Load() {
		return store.ErrUnavailable
	}
	if !strings.Contains(name, s.tick) {
		return w()
	}
	if s.wait != nil {
		select {
		case <-s.wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err := w()
	s.once.Do(func() {
		s.dead.Store(s.die)
		close(s.wrote)
	})
	return err
}

func (s *tickStore) SetNX(ctx context.Context, key, value string, ttl time.Duration) (won bool, err error) {
	err = s.write(ctx, key, func() (err error) {
		won, err = s.Store.SetNX(ctx, key, value, ttl)
		return err
	})
	return won, err
}

func (s *tickStore) Set(ctx context.Context, key, value string, ttl time.Duration) error {
	return s.write(ctx, key, func() error { return s.Store.Set(ctx, key, value, ttl) })
}

func (s *tickStore) Publish(ctx context.Context, pubs []store.Publication) (res []store.Published, err error) {
	err = s.write(ctx, pubs[0].Event.ClientID, func() (err error) {
		res, err = s.Store.Publish(ctx, pubs)
		return err
	})
	return res, err
}

// TestCronRetriesAFailedFire: a tick whose fire fails (the store down at
// that moment) is fired once the store answers again, by the daemon that
// kept running; before, it waited for the next restart's catch-up.
func TestCronRetriesAFailedFire(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var down atomic.Bool
		b := setup(t, be, options{noPool: true, wrap: func(st store.Store) store.Store { return &downStore{Store: st, down: &down} }},
			engine.Function{
				ID: "every-minute", Triggers: []engine.Trigger{{Cron: "* * * * *"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil },
			})
		s := engine.NewScheduler(b.eng)
		if err := s.Start(b.ctx); err != nil {
			t.Fatal(err)
		}
		defer s.Stop(b.ctx)
		tick := start.Truncate(time.Minute).Add(time.Minute)
		down.Store(true)
		b.clock.BlockUntilContext(b.ctx, 1)
		b.clock.Advance(tick.Add(5 * time.Second).Sub(start))
		// The fire fails while the store is down; it comes back.
		time.Sleep(300 * time.Millisecond)
		down.Store(false)
		want := "cron:every-minute:" + strconv.FormatInt(tick.Unix(), 10)
		b.waitFor(t, "the failed tick's run", func() bool {
			page, err := b.st.ListRuns(b.ctx, store.RunFilter{FunctionID: "every-minute"})
			return err == nil && len(page.Items) == 1 && page.Items[0].IdempotencyKey == want
		})
	})
}

// downStore fails every publication while down is set, as a store whose
// server is unreachable does.
type downStore struct {
	store.Store
	down *atomic.Bool
}

func (d *downStore) Publish(ctx context.Context, pubs []store.Publication) ([]store.Published, error) {
	if d.down.Load() {
		return nil, fmt.Errorf("test: %w", store.ErrUnavailable)
	}
	return d.Store.Publish(ctx, pubs)
}
