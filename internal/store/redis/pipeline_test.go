package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// roundTrips counts what a client sends: single commands and pipelines.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (r *roundTrips) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}

// Reads of the site's keys by concurrent callers (workers reading
// counters) go to Redis together, and each caller gets its own answer:
// the value, not found, or its own error. The server is paused while the
// callers start, so they all wait for the first pipelines in flight.
func TestConcurrentCallsShareAPipeline(t *testing.T) {
	t.Parallel()
	srv := redistest.StartT(t, false)
	s, err := Open(t.Context(), srv.URL(0), Options{Clock: clockwork.NewRealClock(), SitePrefix: "site:"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	const callers = 64
	for i := range callers {
		if i%8 == 0 {
			continue // absent
		}
		if err := s.Set(ctx, fmt.Sprintf("views:%d", i), fmt.Sprint(i*10), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SetAdd(ctx, "views:7", 0, "a"); err == nil {
		t.Fatal("SetAdd on a string key succeeded")
	}
	if err := s.Delete(ctx, "views:7"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetAdd(ctx, "views:7", 0, "a"); err != nil { // a set: GET answers WRONGTYPE
		t.Fatal(err)
	}

	var trips roundTrips
	s.rdb.AddHook(&trips)
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	got := make([]string, callers)
	errs := make([]error, callers)
	started := make(chan struct{}, callers)
	for i := range callers {
		wg.Go(func() {
			started <- struct{}{}
			got[i], errs[i] = s.Get(ctx, fmt.Sprintf("views:%d", i))
		})
	}
	for range callers {
		<-started
	}
	// Both pipelines in flight wait on the paused server; the other
	// callers queue behind them.
	deadline := time.Now().Add(10 * time.Second)
	for len(s.calls.slots) < batchInFlight && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := range callers {
		switch {
		case i == 7:
			if !errors.Is(errs[i], store.ErrInvalid) {
				t.Errorf("Get of a set = %q, %v; want ErrInvalid", got[i], errs[i])
			}
		case i%8 == 0:
			if !errors.Is(errs[i], store.ErrNotFound) {
				t.Errorf("Get of views:%d (absent) = %q, %v; want ErrNotFound", i, got[i], errs[i])
			}
		default:
			if errs[i] != nil || got[i] != fmt.Sprint(i*10) {
				t.Errorf("Get of views:%d = %q, %v; want %d", i, got[i], errs[i], i*10)
			}
		}
	}
	if n := trips.n.Load(); n >= callers/2 {
		t.Errorf("%d callers made %d round trips, want them to share pipelines", callers, n)
	}
	t.Logf("%d callers, %d round trips", callers, trips.n.Load())
}
