package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/engine/enginetest"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// start is the fake clock's starting time in every test.
var start = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

type bundle struct {
	ctx     context.Context
	eng     *engine.Engine
	st      store.Store
	clock   *clockwork.FakeClock
	pool    *engine.WorkerPool
	changes <-chan store.Change
}

type options struct {
	leaseTTL time.Duration
	noPool   bool
	observer engine.Observer
	// wrap, when set, wraps the store the engine uses (not the bundle's).
	wrap func(store.Store) store.Store
}

func TestMain(m *testing.M) { backendtest.Main(m, "engine") }

// eachBackend runs test on every backend, as parallel subtests named after
// the backend.
func eachBackend(t *testing.T, test func(t *testing.T, be backendtest.Backend)) {
	t.Parallel()
	backendtest.OnEach(t, test)
}

// setup opens a fresh store on backend be, registers fns on an engine
// driven by a fake clock, and starts a worker pool.
func setup(t *testing.T, be backendtest.Backend, o options, fns ...engine.Function) *bundle {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	clock := clockwork.NewFakeClockAt(start)
	st, _ := be.Open(t, ctx, clock)
	var engStore store.Store = st
	if o.wrap != nil {
		engStore = o.wrap(st)
	}
	eng, err := engine.New(engine.Options{Store: engStore, Clock: clock, Observer: o.observer,
		Jitter: func(d time.Duration) time.Duration { return d }})
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	if err := eng.Register(fns...); err != nil {
		t.Fatalf("register: %v", err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatalf("start engine: %v", err)
	}
	t.Cleanup(func() { eng.Stop(context.Background()) })
	b := &bundle{ctx: ctx, eng: eng, st: st, clock: clock, changes: st.Subscribe(ctx)}
	if !o.noPool {
		if o.leaseTTL == 0 {
			o.leaseTTL = time.Hour
		}
		b.pool = b.startPool(t, o.leaseTTL, "worker-1")
	}
	return b
}

func (b *bundle) startPool(t *testing.T, ttl time.Duration, owner string) *engine.WorkerPool {
	t.Helper()
	return enginetest.StartPool(t, b.ctx, b.eng, engine.PoolOptions{Workers: 4, LeaseTTL: ttl, Owner: owner})
}

// waitFor re-checks cond after every store change until it holds, and
// lists the runs when it times out.
func (b *bundle) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	backendtest.WaitFor(t, b.changes, 10*time.Second, what, cond, func() {
		all, _ := b.st.ListRuns(b.ctx, store.RunFilter{})
		for _, r := range all.Items {
			t.Logf("run %+v", r)
		}
	})
}

func (b *bundle) run(t *testing.T, id string) store.Run {
	t.Helper()
	r, err := b.st.GetRun(b.ctx, id)
	if err != nil {
		t.Fatalf("get run %s: %v", id, err)
	}
	return r
}

// waitStatus waits until run id has status want.
func (b *bundle) waitStatus(t *testing.T, id string, want store.Status) store.Run {
	t.Helper()
	var r store.Run
	b.waitFor(t, fmt.Sprintf("run %s to be %s", id, want), func() bool {
		r = b.run(t, id)
		return r.Status == want
	})
	return r
}

// send publishes one event and returns its single run id (or "" if none).
func (b *bundle) send(t *testing.T, name string, data string) engine.Accepted {
	t.Helper()
	acc, err := b.eng.Publish(b.ctx, []engine.IncomingEvent{{Name: name, Data: json.RawMessage(data)}})
	if err != nil {
		t.Fatalf("publish %s: %v", name, err)
	}
	return acc[0]
}

func oneRun(t *testing.T, acc engine.Accepted) string {
	t.Helper()
	if len(acc.Runs) != 1 {
		t.Fatalf("event %s triggered %d runs, want 1", acc.EventID, len(acc.Runs))
	}
	return acc.Runs[0].ID
}

func steps(t *testing.T, b *bundle, runID string) map[string]store.Step {
	t.Helper()
	ss, err := b.st.Steps(b.ctx, runID)
	if err != nil {
		t.Fatalf("steps: %v", err)
	}
	m := map[string]store.Step{}
	for _, s := range ss {
		m[s.ID] = s
	}
	return m
}

func retries(n int) *int { return &n }

func TestSleepResumesAndMemoizesSteps(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var greeted atomic.Int32
		b := setup(t, be, options{}, engine.Function{
			ID: "hello", Triggers: []engine.Trigger{{Event: "test/hello.world"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				greeting, err := engine.Step(ctx, r, "greet", func(ctx context.Context) (string, error) {
					greeted.Add(1)
					return "Hello", nil
				})
				if err != nil {
					return nil, err
				}
				if err := r.Sleep(ctx, "wait-a-moment", time.Second); err != nil {
					return nil, err
				}
				var data struct{ Email string }
				json.Unmarshal(r.Event.Data, &data)
				return map[string]string{"message": greeting + " " + data.Email + "!"}, nil
			},
		})
		id := oneRun(t, b.send(t, "test/hello.world", `{"email":"a@b.c"}`))
		b.waitStatus(t, id, store.StatusSleeping)
		b.clock.Advance(time.Second)
		run := b.waitStatus(t, id, store.StatusCompleted)
		if got, want := string(run.Output), `{"message":"Hello a@b.c!"}`; got != want {
			t.Errorf("output = %s, want %s", got, want)
		}
		if n := greeted.Load(); n != 1 {
			t.Errorf("greet executed %d times, want 1", n)
		}
		ss := steps(t, b, id)
		if s := ss["wait-a-moment"]; s.Status != store.StatusCompleted || s.Kind != store.StepSleep {
			t.Errorf("sleep step = %+v", s)
		}
		if s := ss["greet"]; s.Status != store.StatusCompleted || len(s.Attempts) != 1 || string(s.Output) != `"Hello"` {
			t.Errorf("greet step = %+v", s)
		}
	})
}

func TestStepRetriesWithBackoffAndKeepsCompletedSteps(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var first, flaky atomic.Int32
		b := setup(t, be, options{}, engine.Function{
			ID: "flaky", Triggers: []engine.Trigger{{Event: "test/flaky"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				if _, err := engine.Step(ctx, r, "first", func(ctx context.Context) (int, error) {
					return int(first.Add(1)), nil
				}); err != nil {
					return nil, err
				}
				return engine.Step(ctx, r, "flaky", func(ctx context.Context) (int32, error) {
					if n := flaky.Add(1); n < 3 {
						return 0, fmt.Errorf("boom %d", n)
					}
					return flaky.Load(), nil
				})
			},
		})
		id := oneRun(t, b.send(t, "test/flaky", `{}`))
		// Inngest's table: 15 s before the first retry, 30 s before the second.
		for i, delay := range []time.Duration{15 * time.Second, 30 * time.Second} {
			b.waitFor(t, "attempt to be recorded", func() bool {
				s := steps(t, b, id)["flaky"]
				t.Logf("i=%d attempts=%d run=%+v wake=%v", i, len(s.Attempts), b.run(t, id), s.WakeAt)
				return len(s.Attempts) == i+1 && b.run(t, id).AvailableAt.Equal(s.WakeAt)
			})
			s := steps(t, b, id)["flaky"]
			if got := s.WakeAt.Sub(s.Attempts[i].EndedAt); got != delay {
				t.Fatalf("retry %d after %v, want %v", i+1, got, delay)
			}
			b.clock.Advance(delay - time.Millisecond)
			if r := b.run(t, id); r.Status != store.StatusRunning || len(steps(t, b, id)["flaky"].Attempts) != i+1 {
				t.Fatalf("retried before its backoff: %+v", r)
			}
			b.clock.Advance(time.Millisecond)
		}
		run := b.waitStatus(t, id, store.StatusCompleted)
		if string(run.Output) != "3" {
			t.Errorf("output = %s, want 3", run.Output)
		}
		if n := first.Load(); n != 1 {
			t.Errorf("completed step executed %d times, want 1", n)
		}
		s := steps(t, b, id)["flaky"]
		if len(s.Attempts) != 3 || s.Attempts[0].Error != "boom 1" || s.Attempts[2].Error != "" {
			t.Errorf("attempts = %+v", s.Attempts)
		}
	})
}

func TestCustomBackoffAndExhaustedRetriesFailTheRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var calls atomic.Int32
		var failures sync.Map
		b := setup(t, be, options{}, engine.Function{
			ID: "doomed", Triggers: []engine.Trigger{{Event: "test/doomed"}},
			Retries: retries(2),
			Backoff: func(n int) time.Duration { return time.Duration(n) * time.Minute },
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				return engine.Step(ctx, r, "always-fails", func(ctx context.Context) (any, error) {
					calls.Add(1)
					return nil, errors.New("nope")
				})
			},
			OnFailure: func(ctx context.Context, r *engine.Run) (any, error) {
				var d struct {
					FunctionID string `json:"function_id"`
					RunID      string `json:"run_id"`
					Error      string `json:"error"`
				}
				json.Unmarshal(r.Event.Data, &d)
				failures.Store(d.RunID, d)
				return d.Error, nil
			},
		})
		id := oneRun(t, b.send(t, "test/doomed", `{}`))
		for i, d := range []time.Duration{time.Minute, 2 * time.Minute} {
			// Steps first, then the run: a run read after the attempt was
			// recorded and found without a lease has been suspended.
			var r store.Run
			b.waitFor(t, "a retry to be scheduled", func() bool {
				attempts := len(steps(t, b, id)["always-fails"].Attempts)
				r = b.run(t, id)
				return attempts == i+1 && r.LeaseOwner == ""
			})
			if got := r.AvailableAt.Sub(b.clock.Now()); got != d {
				t.Fatalf("next attempt in %v, want %v", got, d)
			}
			b.clock.Advance(d)
		}
		run := b.waitStatus(t, id, store.StatusFailed)
		if calls.Load() != 3 {
			t.Errorf("attempts = %d, want 3 (1 + 2 retries)", calls.Load())
		}
		if want := `step "always-fails" failed: nope`; run.Error != want {
			t.Errorf("error = %q, want %q", run.Error, want)
		}
		b.waitFor(t, "the on-failure function to run", func() bool { _, ok := failures.Load(id); return ok })
		page, err := b.st.ListEvents(b.ctx, store.EventFilter{Name: engine.EventFunctionFailed})
		if err != nil || len(page.Items) != 1 {
			t.Fatalf("function.failed events = %v, %v; want 1", page.Items, err)
		}
		var data map[string]any
		json.Unmarshal(page.Items[0].Data, &data)
		if data["function_id"] != "doomed" || data["run_id"] != id || data["event"] == nil {
			t.Errorf("function.failed data = %v", data)
		}
	})
}

func TestNonRetriableAndRetryAt(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var calls atomic.Int32
		b := setup(t, be, options{}, engine.Function{
			ID: "strict", Triggers: []engine.Trigger{{Event: "test/strict"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				var mode struct{ Mode string }
				json.Unmarshal(r.Event.Data, &mode)
				_, err := engine.Step(ctx, r, "call-api", func(ctx context.Context) (string, error) {
					n := calls.Add(1)
					switch {
					case mode.Mode == "invalid":
						return "", engine.NonRetriable(errors.New("422 invalid recipient"))
					case n == 1:
						return "", engine.RetryAt(errors.New("429 slow down"), r.Event.ReceivedAt.Add(90*time.Second))
					}
					return "sent", nil
				})
				var se *engine.StepError
				if errors.As(err, &se) {
					return "handled: " + se.Message, nil // a handler may recover from a failed step
				}
				return "ok", err
			},
		})
		id := oneRun(t, b.send(t, "test/strict", `{"mode":"limited"}`))
		b.waitFor(t, "retry-after to be scheduled", func() bool { return len(steps(t, b, id)["call-api"].Attempts) == 1 })
		if got, want := steps(t, b, id)["call-api"].WakeAt, start.Add(90*time.Second); !got.Equal(want) {
			t.Fatalf("retry at %v, want %v", got, want)
		}
		b.clock.Advance(90 * time.Second)
		if r := b.waitStatus(t, id, store.StatusCompleted); string(r.Output) != `"ok"` {
			t.Errorf("output = %s", r.Output)
		}

		id = oneRun(t, b.send(t, "test/strict", `{"mode":"invalid"}`))
		r := b.waitStatus(t, id, store.StatusCompleted)
		if want := `"handled: 422 invalid recipient"`; string(r.Output) != want {
			t.Errorf("output = %s, want %s", r.Output, want)
		}
		if s := steps(t, b, id)["call-api"]; s.Status != store.StatusFailed || len(s.Attempts) != 1 {
			t.Errorf("non-retriable step = %+v, want Failed after 1 attempt", s)
		}
	})
}

func TestHandlerErrorsRetryTheRunThenFail(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var calls atomic.Int32
		b := setup(t, be, options{}, engine.Function{
			ID: "bare", Triggers: []engine.Trigger{{Event: "test/bare"}}, Retries: retries(1),
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				calls.Add(1)
				if r.Attempt == 0 {
					return nil, errors.New("first try fails")
				}
				panic("second try panics")
			},
		})
		id := oneRun(t, b.send(t, "test/bare", `{}`))
		b.waitFor(t, "function-level retry", func() bool { return b.run(t, id).Attempt == 1 })
		b.clock.Advance(15 * time.Second)
		r := b.waitStatus(t, id, store.StatusFailed)
		if r.Error != "panic: second try panics" || calls.Load() != 2 {
			t.Errorf("error = %q after %d calls", r.Error, calls.Load())
		}
	})
}

func TestRepeatedStepNamesGetNumbered(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{}, engine.Function{
			ID: "loop", Triggers: []engine.Trigger{{Event: "test/loop"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				sum := 0
				for i := range 3 {
					n, err := engine.Step(ctx, r, "item", func(ctx context.Context) (int, error) { return i * 10, nil })
					if err != nil {
						return nil, err
					}
					sum += n
				}
				return sum, nil
			},
		})
		id := oneRun(t, b.send(t, "test/loop", `{}`))
		b.waitStatus(t, id, store.StatusCompleted)
		ss := steps(t, b, id)
		for id, want := range map[string]string{"item": "0", "item:1": "10", "item:2": "20"} {
			if got := string(ss[id].Output); got != want || ss[id].Name != "item" {
				t.Errorf("step %s = %s (name %q), want %s", id, got, ss[id].Name, want)
			}
		}
	})
}

// TestConcurrentStepIsRefused calls a step from a second goroutine while
// the first is in flight: the second takes no step and gets
// ErrConcurrentStep, non-retriable, and the name stays free for the next
// step taken one after the other. Run with -race: no data race either way.
func TestConcurrentStepIsRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		concurrent := make(chan error, 1)
		b := setup(t, be, options{}, engine.Function{
			ID: "parallel", Triggers: []engine.Trigger{{Event: "test/parallel"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				if _, err := engine.Step(ctx, r, "first", func(ctx context.Context) (int, error) {
					var err error
					done := make(chan struct{})
					go func() {
						defer close(done)
						_, err = engine.Step(ctx, r, "second", func(ctx context.Context) (int, error) { return 2, nil })
					}()
					<-done
					concurrent <- err
					return 1, nil
				}); err != nil {
					return nil, err
				}
				return engine.Step(ctx, r, "second", func(ctx context.Context) (int, error) { return 2, nil })
			},
		})
		id := oneRun(t, b.send(t, "test/parallel", `{}`))
		b.waitStatus(t, id, store.StatusCompleted)
		err := <-concurrent
		if !errors.Is(err, engine.ErrConcurrentStep) || !engine.IsNonRetriable(err) {
			t.Errorf("concurrent step: %v, want a non-retriable ErrConcurrentStep", err)
		}
		if !strings.Contains(fmt.Sprint(err), `step "second" called while step "first" is in flight`) {
			t.Errorf("concurrent step error %q does not name both steps", err)
		}
		ss := steps(t, b, id)
		if len(ss) != 2 || string(ss["first"].Output) != "1" || string(ss["second"].Output) != "2" {
			t.Errorf("recorded steps %v, want first=1 and second=2", ss)
		}
	})
}

// TestHandlerReturningDuringAStepFailsTheRun returns from the handler while
// a step it started in a goroutine is in flight: the run fails at once, and
// the step, ending later, records nothing.
func TestHandlerReturningDuringAStepFailsTheRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		inFlight, release, late := make(chan struct{}), make(chan struct{}), make(chan error, 1)
		b := setup(t, be, options{}, engine.Function{
			ID: "leaky", Triggers: []engine.Trigger{{Event: "test/leaky"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				go func() {
					_, err := engine.Step(ctx, r, "slow", func(ctx context.Context) (int, error) {
						close(inFlight)
						<-release
						return 1, nil
					})
					late <- err
				}()
				<-inFlight
				return "too early", nil
			},
		})
		id := oneRun(t, b.send(t, "test/leaky", `{}`))
		run := b.waitStatus(t, id, store.StatusFailed)
		if !strings.Contains(run.Error, `step "slow" was in flight`) {
			t.Errorf("run error %q, want it to name the step in flight", run.Error)
		}
		close(release)
		if err := <-late; err == nil {
			t.Error("the late step reported success")
		}
		if ss := steps(t, b, id); len(ss) != 0 {
			t.Errorf("the late step was recorded: %v", ss)
		}
	})
}

func TestSendEventStepTriggersOnceAndWildcards(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var seen sync.Map
		var replayed atomic.Int32
		b := setup(t, be, options{},
			engine.Function{
				ID: "sender", Triggers: []engine.Trigger{{Event: "test/send"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					ids, err := r.SendEvent(ctx, "notify", engine.IncomingEvent{Name: "blog/post.published", Data: json.RawMessage(`{"slug":"x"}`)})
					if err != nil {
						return nil, err
					}
					if replayed.Add(1) == 1 {
						return nil, errors.New("fail after sending, so the handler replays")
					}
					return ids, nil
				},
			},
			engine.Function{
				ID: "listener", Triggers: []engine.Trigger{{Event: "blog/*"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					seen.Store(r.Event.ID, r.Event.Name)
					return nil, nil
				},
			},
			engine.Function{
				ID: "dotted", Triggers: []engine.Trigger{{Event: "blog/post.*", If: func(ev store.Event) bool { return string(ev.Data) != `{"slug":"x"}` }}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, errors.New("filtered out by If") },
			},
		)
		id := oneRun(t, b.send(t, "test/send", `{}`))
		b.waitFor(t, "handler retry", func() bool { return b.run(t, id).Attempt == 1 })
		b.clock.Advance(15 * time.Second)
		b.waitStatus(t, id, store.StatusCompleted)
		page, err := b.st.ListEvents(b.ctx, store.EventFilter{Name: "blog/post.published"})
		if err != nil || len(page.Items) != 1 {
			t.Fatalf("sent events = %d (%v), want exactly 1", len(page.Items), err)
		}
		runs, _ := b.st.ListRuns(b.ctx, store.RunFilter{EventID: page.Items[0].ID})
		if len(runs.Items) != 1 || runs.Items[0].FunctionID != "listener" {
			t.Fatalf("runs of the sent event = %+v, want one listener run", runs.Items)
		}
		b.waitStatus(t, runs.Items[0].ID, store.StatusCompleted)
	})
}

func TestWaitForEvent(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{}, engine.Function{
			ID: "approval", Triggers: []engine.Trigger{{Event: "test/order.created"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				ev, err := r.WaitForEvent(ctx, "wait-approval", engine.WaitOptions{Event: "test/order.approved", Match: "data.order", Timeout: time.Hour})
				if err != nil {
					return nil, err
				}
				if ev == nil {
					return "timed out", nil
				}
				return "approved by " + string(ev.Data), nil
			},
		})
		approved := oneRun(t, b.send(t, "test/order.created", `{"order":1}`))
		expired := oneRun(t, b.send(t, "test/order.created", `{"order":2}`))
		b.waitStatus(t, approved, store.StatusSleeping)
		b.waitStatus(t, expired, store.StatusSleeping)
		b.send(t, "test/order.approved", `{"order":3}`) // matches neither
		b.send(t, "test/order.approved", `{"order":1,"by":"ann"}`)
		r := b.waitStatus(t, approved, store.StatusCompleted)
		if want := `"approved by {\"order\":1,\"by\":\"ann\"}"`; string(r.Output) != want {
			t.Errorf("output = %s, want %s", r.Output, want)
		}
		if got := b.run(t, expired).Status; got != store.StatusSleeping {
			t.Fatalf("unmatched run is %s, want still Sleeping", got)
		}
		b.clock.Advance(time.Hour)
		if r := b.waitStatus(t, expired, store.StatusCompleted); string(r.Output) != `"timed out"` {
			t.Errorf("output = %s, want timed out", r.Output)
		}
	})
}

// blocker is a handler that holds its run until released, reporting starts
// and returns.
type blocker struct {
	started chan string
	exited  chan string
	release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{started: make(chan string, 100), exited: make(chan string, 100), release: make(chan struct{})}
}

func (bl *blocker) handler(ctx context.Context, r *engine.Run) (any, error) {
	defer func() { bl.exited <- r.ID }()
	return engine.Step(ctx, r, "hold", func(ctx context.Context) (string, error) {
		bl.started <- r.ID
		select {
		case <-bl.release:
			return "released", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
}

func (bl *blocker) next(t *testing.T) string {
	t.Helper()
	return receive(t, bl.started, "a run to start")
}

func receive(t *testing.T, ch <-chan string, what string) string {
	t.Helper()
	select {
	case id := <-ch:
		return id
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return ""
	}
}

func TestConcurrencyLimitPerKey(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		bl := newBlocker()
		b := setup(t, be, options{}, engine.Function{
			ID: "per-user", Triggers: []engine.Trigger{{Event: "test/job"}},
			Concurrency: &engine.Concurrency{Limit: 1, Key: "event.data.user"},
			Handler:     bl.handler,
		})
		// a1 and a2 become available at the same fake instant: the queue
		// takes such runs in id order, and an engine's ids increase in the
		// order it mints them (TestIDsIncreaseInMintingOrderPerEngine), so
		// a1 holds the slot and a2 waits.
		a1 := oneRun(t, b.send(t, "test/job", `{"user":"a"}`))
		a2 := oneRun(t, b.send(t, "test/job", `{"user":"a"}`))
		bb := oneRun(t, b.send(t, "test/job", `{"user":"b"}`))
		got := map[string]bool{bl.next(t): true, bl.next(t): true}
		if !got[a1] || !got[bb] {
			t.Fatalf("started %v, want the first run of a and the run of b", got)
		}
		if r := b.run(t, a2); r.Status != store.StatusQueued {
			t.Fatalf("second run of user a is %s while the first holds the slot", r.Status)
		}
		close(bl.release)
		if id := bl.next(t); id != a2 {
			t.Fatalf("started %s, want %s", id, a2)
		}
		b.waitStatus(t, a2, store.StatusCompleted)
	})
}

// TestIDsIncreaseInMintingOrderPerEngine mints ids on two engines whose
// fake clocks stand a minute apart, interleaved: each engine's event and run
// ids still increase in the order it minted them, and its run shares its id. A source shared across
// engines restarts its entropy at random whenever the millisecond changes,
// so one engine's ids within a millisecond came out of order.
func TestIDsIncreaseInMintingOrderPerEngine(t *testing.T) {
	t.Parallel()
	fn := engine.Function{
		ID: "noop", Triggers: []engine.Trigger{{Event: "test/id"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil },
	}
	sqlite := backendtest.Backends[0]
	early := setup(t, sqlite, options{noPool: true}, fn)
	late := setup(t, sqlite, options{noPool: true}, fn)
	late.clock.Advance(time.Minute)
	last := map[*bundle]string{}
	for i := range 200 {
		b := early
		if i%2 == 1 {
			b = late
		}
		acc := b.send(t, "test/id", `{}`)
		if id := acc.EventID; id <= last[b] {
			t.Fatalf("id %d: %s minted after %s", i, id, last[b])
		}
		last[b] = acc.EventID
		// An event's first run shares its id (store.RunSpec.ID).
		if run := oneRun(t, acc); run != acc.EventID {
			t.Fatalf("event %s's run is %s, want the event's id", acc.EventID, run)
		}
	}
}

func TestRateLimitSkips(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{noPool: true}, engine.Function{
			ID: "limited", Triggers: []engine.Trigger{{Event: "test/rl"}},
			RateLimit: &engine.RateLimit{Limit: 2, Period: time.Minute, Key: "event.data.ip"},
			Handler:   func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil },
		})
		var statuses []store.Status
		for _, ip := range []string{"1", "1", "1", "2"} {
			statuses = append(statuses, b.send(t, "test/rl", `{"ip":"`+ip+`"}`).Runs[0].Status)
		}
		want := []store.Status{store.StatusQueued, store.StatusQueued, store.StatusSkipped, store.StatusQueued}
		if fmt.Sprint(statuses) != fmt.Sprint(want) {
			t.Fatalf("statuses = %v, want %v", statuses, want)
		}
		b.clock.Advance(time.Minute)
		if s := b.send(t, "test/rl", `{"ip":"1"}`).Runs[0].Status; s != store.StatusQueued {
			t.Errorf("after the period: %s, want Queued", s)
		}
	})
}

// TestDelayedRunWakesAnIdlePool sends an event dated a minute ahead to a
// pool with nothing pending: creating the run must arm the pool's timer,
// since nothing else will wake it.
func TestDelayedRunWakesAnIdlePool(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{}, engine.Function{
			ID: "later", Triggers: []engine.Trigger{{Event: "test/later"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil },
		})
		// A run to completion first leaves the pool idle, without a timer.
		b.waitStatus(t, oneRun(t, b.send(t, "test/later", `{}`)), store.StatusCompleted)

		acc, err := b.eng.Publish(b.ctx, []engine.IncomingEvent{{Name: "test/later", TS: start.Add(time.Minute).UnixMilli()}})
		if err != nil {
			t.Fatalf("publish: %v", err)
		}
		id := oneRun(t, acc[0])
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		if err := b.clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatalf("the pool armed no timer for the delayed run: %v", err)
		}
		b.clock.Advance(time.Minute)
		b.waitStatus(t, id, store.StatusCompleted)
	})
}

func TestDebounceIdempotencyAndSingleton(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		bl := newBlocker()
		var lastSeen atomic.Value
		b := setup(t, be, options{},
			engine.Function{
				ID: "debounced", Triggers: []engine.Trigger{{Event: "test/refresh"}},
				Debounce: &engine.Debounce{Period: 10 * time.Second, MaxWait: 25 * time.Second},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					lastSeen.Store(string(r.Event.Data))
					return nil, nil
				},
			},
			engine.Function{
				ID: "once", Triggers: []engine.Trigger{{Event: "test/pay"}}, Idempotency: "event.data.order",
				Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil },
			},
			engine.Function{
				ID: "single", Triggers: []engine.Trigger{{Event: "test/single"}}, Singleton: &engine.Singleton{},
				Handler: bl.handler,
			},
		)
		// Debounce: events 8 s apart keep pushing the start, but never past 25 s.
		first := oneRun(t, b.send(t, "test/refresh", `{"n":1}`))
		for n := 2; n <= 4; n++ {
			b.clock.Advance(8 * time.Second)
			acc := b.send(t, "test/refresh", fmt.Sprintf(`{"n":%d}`, n))
			if acc.Runs[0].ID != first || !acc.Runs[0].Existing {
				t.Fatalf("event %d made run %+v, want the pending one", n, acc.Runs[0])
			}
		}
		if got, want := b.run(t, first).AvailableAt, start.Add(25*time.Second); !got.Equal(want) {
			t.Fatalf("debounced start %v, want capped at %v", got, want)
		}
		b.clock.Advance(time.Second)
		b.waitStatus(t, first, store.StatusCompleted)
		if got := lastSeen.Load(); got != `{"n":4}` {
			t.Errorf("debounced run saw %v, want the last event", got)
		}

		// Idempotency: one run per order within 24 h; the repeat is Skipped.
		a := b.send(t, "test/pay", `{"order":"o-1"}`)
		again := b.send(t, "test/pay", `{"order":"o-1"}`)
		if r := again.Runs[0]; r.ID == a.Runs[0].ID || r.Status != store.StatusSkipped || r.Skip != store.SkipIdempotency {
			t.Errorf("idempotent event made %+v, want a Skipped run of its own", r)
		}

		// Singleton: a second run while one is unfinished is skipped.
		s1 := oneRun(t, b.send(t, "test/single", `{}`))
		bl.next(t)
		if st := b.send(t, "test/single", `{}`).Runs[0].Status; st != store.StatusSkipped {
			t.Errorf("second singleton run is %s, want Skipped", st)
		}
		close(bl.release)
		b.waitStatus(t, s1, store.StatusCompleted)
		// Queued, or Running when it started on the idle pool at once.
		if st := b.send(t, "test/single", `{}`).Runs[0].Status; st != store.StatusQueued && st != store.StatusRunning {
			t.Errorf("singleton run after the first finished is %s, want it created (Queued or Running)", st)
		}
	})
}

func TestFinishTimeoutAndCancel(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		bl := newBlocker()
		b := setup(t, be, options{},
			engine.Function{
				ID: "slow", Triggers: []engine.Trigger{{Event: "test/slow"}}, FinishTimeout: time.Minute,
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					return nil, r.Sleep(ctx, "nap", time.Hour)
				},
			},
			engine.Function{ID: "held", Triggers: []engine.Trigger{{Event: "test/held"}}, Handler: bl.handler},
		)
		slow := oneRun(t, b.send(t, "test/slow", `{}`))
		if r := b.waitStatus(t, slow, store.StatusSleeping); !r.AvailableAt.Equal(start.Add(time.Minute)) {
			t.Fatalf("sleeping run wakes at %v, want at its finish deadline", r.AvailableAt)
		}
		b.clock.Advance(time.Minute)
		if r := b.waitStatus(t, slow, store.StatusCancelled); r.Error != "finish timeout exceeded" {
			t.Errorf("error = %q", r.Error)
		}

		held := oneRun(t, b.send(t, "test/held", `{}`))
		bl.next(t)
		if _, err := b.eng.Cancel(b.ctx, held); err != nil {
			t.Fatalf("cancel: %v", err)
		}
		if id := receive(t, bl.exited, "the handler to return"); id != held {
			t.Fatalf("handler of %s returned, want %s", id, held)
		}
		if r := b.run(t, held); r.Status != store.StatusCancelled {
			t.Errorf("status = %s, want Cancelled", r.Status)
		}
		if s := steps(t, b, held)["hold"]; s.Status == store.StatusCompleted {
			t.Errorf("cancelled run recorded its step: %+v", s)
		}
		if _, err := b.eng.Cancel(b.ctx, held); !errors.Is(err, store.ErrFinished) {
			t.Errorf("second cancel: %v, want ErrFinished", err)
		}
	})
}

func TestLapsedLeaseIsTakenOver(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var runs atomic.Int32
		obs := &takeovers{}
		b := setup(t, be, options{noPool: true, observer: obs}, engine.Function{
			ID: "work", Triggers: []engine.Trigger{{Event: "test/work"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				return engine.Step(ctx, r, "do", func(ctx context.Context) (int32, error) { return runs.Add(1), nil })
			},
		})
		id := oneRun(t, b.send(t, "test/work", `{}`))
		// A worker that claims the run and dies without renewing its lease.
		leases, err := b.st.Claim(b.ctx, "crashed", 1, 5*time.Second)
		if err != nil || len(leases) != 1 {
			t.Fatalf("claim: %v, %d leases", err, len(leases))
		}
		b.startPool(t, 5*time.Second, "survivor")
		b.clock.Advance(4 * time.Second)
		if r := b.run(t, id); r.LeaseOwner != "crashed" {
			t.Fatalf("run taken from a live lease: owner %q", r.LeaseOwner)
		}
		if n := obs.n.Load(); n != 0 {
			t.Fatalf("takeovers before the lease lapsed = %d, want 0", n)
		}
		b.clock.Advance(time.Second + time.Millisecond)
		b.waitStatus(t, id, store.StatusCompleted)
		if err := b.st.Finish(b.ctx, &leases[0], store.Outcome{Status: store.StatusCompleted}); !errors.Is(err, store.ErrLeaseLost) {
			t.Errorf("dead worker's finish: %v, want ErrLeaseLost", err)
		}
		if n := obs.n.Load(); n != 1 {
			t.Errorf("takeovers observed = %d, want 1", n)
		}
		// A fresh run the pool claims from the queue is no takeover.
		id2 := oneRun(t, b.send(t, "test/work", `{}`))
		b.waitStatus(t, id2, store.StatusCompleted)
		if n := obs.n.Load(); n != 1 {
			t.Errorf("takeovers observed after a queued run = %d, want 1", n)
		}
	})
}

// takeovers is an Observer that counts lease takeovers.
type takeovers struct {
	n atomic.Int32
}

func (*takeovers) RunStarted(string, time.Duration)          {}
func (*takeovers) RunSkipped(string, string)                 {}
func (*takeovers) RunFinished(string, string)                {}
func (*takeovers) StepAttempt(string, string, time.Duration) {}
func (*takeovers) LeaseLost()                                {}
func (o *takeovers) LeaseTakenOver()                         { o.n.Add(1) }
func (*takeovers) StepConflict(string)                       {}
func (*takeovers) StoreError(string)                         {}

func TestGracefulShutdownHandsRunsBack(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var attempts atomic.Int32
		started := make(chan string, 1)
		proceed := make(chan struct{})
		b := setup(t, be, options{noPool: true}, engine.Function{
			ID: "long", Triggers: []engine.Trigger{{Event: "test/long"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				return engine.Step(ctx, r, "long-step", func(ctx context.Context) (string, error) {
					if attempts.Add(1) == 1 {
						started <- r.ID
					}
					select {
					case <-proceed:
						return "done", nil
					case <-ctx.Done():
						return "", ctx.Err()
					}
				})
			},
		})
		pool := engine.NewWorkerPool(b.eng, engine.PoolOptions{Workers: 2, LeaseTTL: time.Hour, Owner: "old"})
		pool.Start(b.ctx)
		id := oneRun(t, b.send(t, "test/long", `{}`))
		receive(t, started, "the run to start")
		ctx, cancel := context.WithCancel(b.ctx)
		cancel() // no grace: interrupt at once
		pool.Stop(ctx)
		r := b.run(t, id)
		if r.LeaseOwner != "" || !r.AvailableAt.Equal(b.clock.Now()) {
			t.Fatalf("after shutdown the run is %+v, want handed back for now", r)
		}
		if s := steps(t, b, id)["long-step"]; len(s.Attempts) != 0 {
			t.Errorf("interrupted attempt recorded as failed: %+v", s)
		}
		close(proceed)
		b.startPool(t, time.Hour, "new")
		b.waitStatus(t, id, store.StatusCompleted)
	})
}

func TestCronFiresOncePerTickAndCatchesUp(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{noPool: true}, engine.Function{
			ID: "every-minute", Triggers: []engine.Trigger{{Cron: "* * * * *"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil },
		})
		list := func() []store.Run {
			page, err := b.st.ListRuns(b.ctx, store.RunFilter{FunctionID: "every-minute"})
			if err != nil {
				t.Fatal(err)
			}
			return page.Items
		}
		s1 := engine.NewScheduler(b.eng)
		s2 := engine.NewScheduler(b.eng) // a second daemon's scheduler
		for _, s := range []*engine.Scheduler{s1, s2} {
			if err := s.Start(b.ctx); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(list()); n != 0 {
			t.Fatalf("%d runs before the first tick on a first start", n)
		}
		b.clock.BlockUntilContext(b.ctx, 2)
		b.clock.Advance(start.Truncate(time.Minute).Add(time.Minute).Sub(start))
		b.waitFor(t, "the tick's run", func() bool { return len(list()) >= 1 })
		for _, s := range []*engine.Scheduler{s1, s2} {
			s.Stop(b.ctx)
		}
		runs := list()
		if len(runs) != 1 {
			t.Fatalf("%d runs for one tick across two schedulers, want 1", len(runs))
		}
		ev, _ := b.st.GetEvent(b.ctx, runs[0].EventID)
		tick := start.Truncate(time.Minute).Add(time.Minute)
		if ev.Name != engine.EventScheduledTimer || !json.Valid(ev.Data) || runs[0].IdempotencyKey != fmt.Sprintf("cron:every-minute:%d", tick.Unix()) {
			t.Errorf("cron run %+v from event %s %s", runs[0], ev.Name, ev.Data)
		}
		// Down for three ticks: the restart fires the latest missed one, once.
		b.clock.Advance(3*time.Minute + 30*time.Second)
		s3 := engine.NewScheduler(b.eng)
		s3.Start(b.ctx)
		defer s3.Stop(b.ctx)
		runs = list()
		if len(runs) != 2 || runs[0].IdempotencyKey != fmt.Sprintf("cron:every-minute:%d", tick.Add(3*time.Minute).Unix()) {
			t.Fatalf("after restart: %d runs, newest %+v; want the missed tick caught up once", len(runs), runs[0])
		}
	})
}

// TestCronCatchesUpItsFirstTick starts a cron function for the first time
// and stops its daemon before its first tick: the restart after two ticks
// fires the latest, once, as for any tick missed while down. Before, no
// tick was owed until one had fired.
func TestCronCatchesUpItsFirstTick(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{noPool: true}, engine.Function{
			ID: "every-minute", Triggers: []engine.Trigger{{Cron: "* * * * *"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil },
		})
		tick := start.Truncate(time.Minute).Add(2 * time.Minute)
		runs := b.runsAfterARestart(t, "every-minute", tick.Add(10*time.Second))
		want := fmt.Sprintf("cron:every-minute:%d", tick.Unix())
		if len(runs) != 1 || runs[0].IdempotencyKey != want {
			t.Fatalf("after a restart past the first two ticks: %d runs %+v, want one for %s", len(runs), runs, want)
		}
	})
}

// TestCronCatchesUpAFirstMonthlyTick: a monthly schedule first started days
// after its last tick (March 4th, the tick March 1st) is still owed its next
// one, April 1st, by a daemon that was down across it. The first start did
// not mark the store when its last tick was further back than a catch-up
// reaches, so the restart took itself for the first start and owed nothing.
func TestCronCatchesUpAFirstMonthlyTick(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{noPool: true}, engine.Function{
			ID: "monthly", Triggers: []engine.Trigger{{Cron: "0 0 1 * *"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil },
		})
		tick := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
		runs := b.runsAfterARestart(t, "monthly", tick.Add(10*time.Second))
		want := fmt.Sprintf("cron:monthly:%d", tick.Unix())
		if len(runs) != 1 || runs[0].IdempotencyKey != want {
			t.Fatalf("after a restart past April 1st: %d runs %+v, want one for %s", len(runs), runs, want)
		}
	})
}

// runsAfterARestart starts a scheduler on b's engine and stops it (a
// daemon's first start), moves the clock to until with no scheduler
// running (the daemon down), starts one again and lists the runs of fn.
func (b *bundle) runsAfterARestart(t *testing.T, fn string, until time.Time) []store.Run {
	t.Helper()
	first := engine.NewScheduler(b.eng)
	if err := first.Start(b.ctx); err != nil {
		t.Fatal(err)
	}
	first.Stop(b.ctx)
	b.clock.Advance(until.Sub(b.clock.Now()))
	again := engine.NewScheduler(b.eng)
	if err := again.Start(b.ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.Stop(context.Background()) })
	page, err := b.st.ListRuns(b.ctx, store.RunFilter{FunctionID: fn})
	if err != nil {
		t.Fatal(err)
	}
	return page.Items
}

func TestRegisterRejectsBadOptions(t *testing.T) {
	t.Parallel()
	h := func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil }
	tests := []struct {
		name string
		fn   engine.Function
	}{
		{"no id", engine.Function{Triggers: []engine.Trigger{{Event: "a/b"}}, Handler: h}},
		{"no handler", engine.Function{ID: "x", Triggers: []engine.Trigger{{Event: "a/b"}}}},
		{"no trigger", engine.Function{ID: "x", Handler: h}},
		{"bad cron", engine.Function{ID: "x", Triggers: []engine.Trigger{{Cron: "61 * * * *"}}, Handler: h}},
		{"bad tz", engine.Function{ID: "x", Triggers: []engine.Trigger{{Cron: "TZ=Mars/Olympus 0 * * * *"}}, Handler: h}},
		{"wildcard mid-name", engine.Function{ID: "x", Triggers: []engine.Trigger{{Event: "blog*/x"}}, Handler: h}},
		{"bad key", engine.Function{ID: "x", Triggers: []engine.Trigger{{Event: "a/b"}}, Concurrency: &engine.Concurrency{Limit: 1, Key: "event..x"}, Handler: h}},
		{"zero limit", engine.Function{ID: "x", Triggers: []engine.Trigger{{Event: "a/b"}}, RateLimit: &engine.RateLimit{Period: time.Second}, Handler: h}},
	}
	for _, tt := range tests {
		eng, _ := engine.New(engine.Options{Store: nopStore{}})
		if err := eng.Register(tt.fn); err == nil {
			t.Errorf("%s: registered without error", tt.name)
		}
	}
}

// nopStore satisfies store.Store for tests that never reach the store.
type nopStore struct{ store.Store }

func (nopStore) Partitions() int { return 1 }

func TestSleepUntilAndFutureTimestampsDelayRuns(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		wakeAt := start.Add(3 * time.Hour)
		var started sync.Map
		b := setup(t, be, options{}, engine.Function{
			ID: "later", Triggers: []engine.Trigger{{Event: "test/later"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				started.Store(r.ID, b0(r))
				if err := r.SleepUntil(ctx, "until", wakeAt); err != nil {
					return nil, err
				}
				return "woke", nil
			},
		})
		// ts one minute ahead: the run waits for it before starting.
		acc, err := b.eng.Publish(b.ctx, []engine.IncomingEvent{{Name: "test/later", TS: start.Add(time.Minute).UnixMilli()}})
		if err != nil {
			t.Fatal(err)
		}
		id := oneRun(t, acc[0])
		if r := b.run(t, id); r.Status != store.StatusQueued || !r.AvailableAt.Equal(start.Add(time.Minute)) {
			t.Fatalf("delayed run = %s at %v", r.Status, r.AvailableAt)
		}
		b.clock.Advance(time.Minute)
		if r := b.waitStatus(t, id, store.StatusSleeping); !r.AvailableAt.Equal(wakeAt) {
			t.Fatalf("sleeping until %v, want %v", r.AvailableAt, wakeAt)
		}
		b.clock.Advance(wakeAt.Sub(b.clock.Now()))
		b.waitStatus(t, id, store.StatusCompleted)
	})
}

// b0 marks that a handler ran; its value is irrelevant.
func b0(*engine.Run) bool { return true }

func TestIntakeValidationAndDedup(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{noPool: true}, engine.Function{
			ID: "any", Triggers: []engine.Trigger{{Event: "test/*"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil },
		})
		for _, bad := range [][]engine.IncomingEvent{
			{{Name: "test/ok"}, {Name: ""}},
			{{Name: "cyberdrew/function.failed"}},
			{{Name: "inngest/function.invoked"}},
			{{Name: "test/ok", TS: -1}},
		} {
			_, err := b.eng.Publish(b.ctx, bad)
			var ve *engine.ValidationError
			if !errors.As(err, &ve) {
				t.Errorf("Publish(%+v) = %v, want a ValidationError", bad, err)
			}
		}
		if page, _ := b.st.ListEvents(b.ctx, store.EventFilter{}); len(page.Items) != 0 {
			t.Fatalf("rejected batches stored %d events", len(page.Items))
		}
		first, err := b.eng.Publish(b.ctx, []engine.IncomingEvent{{ID: "client-1", Name: "test/a"}})
		if err != nil {
			t.Fatal(err)
		}
		again, _ := b.eng.Publish(b.ctx, []engine.IncomingEvent{{ID: "client-1", Name: "test/a"}})
		if !again[0].Duplicate || again[0].EventID != first[0].EventID || len(again[0].Runs) != 0 {
			t.Errorf("duplicate = %+v, want the first id %s and no runs", again[0], first[0].EventID)
		}
		b.clock.Advance(24*time.Hour + time.Second)
		later, _ := b.eng.Publish(b.ctx, []engine.IncomingEvent{{ID: "client-1", Name: "test/a"}})
		if later[0].Duplicate || len(later[0].Runs) != 1 {
			t.Errorf("after 24 h the id is new again: %+v", later[0])
		}
	})
}

func TestInvokeRerunAndDisabledFunctions(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var calls atomic.Int32
		b := setup(t, be, options{},
			engine.Function{
				ID: "idem", Triggers: []engine.Trigger{{Event: "test/idem"}}, Idempotency: "event.data.k",
				Handler: func(ctx context.Context, r *engine.Run) (any, error) { calls.Add(1); return string(r.Event.Data), nil },
			},
			engine.Function{
				ID: "off", Triggers: []engine.Trigger{{Event: "test/idem"}, {Cron: "* * * * *"}}, Disabled: "no token",
				Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, errors.New("must not run") },
			},
		)
		id := oneRun(t, b.send(t, "test/idem", `{"k":1}`))
		b.waitStatus(t, id, store.StatusCompleted)
		ref, err := b.eng.Rerun(b.ctx, id)
		if err != nil || ref.ID == id {
			t.Fatalf("rerun = %+v, %v; want a new run despite the idempotency key", ref, err)
		}
		b.waitStatus(t, ref.ID, store.StatusCompleted)
		acc, err := b.eng.Invoke(b.ctx, "idem", json.RawMessage(`{"k":1}`))
		if err != nil {
			t.Fatal(err)
		}
		if r := b.waitStatus(t, oneRun(t, acc), store.StatusCompleted); string(r.Output) != `"{\"k\":1}"` {
			t.Errorf("invoked run output %s", r.Output)
		}
		if ev, _ := b.st.GetEvent(b.ctx, acc.EventID); ev.Name != engine.EventFunctionInvoked {
			t.Errorf("invoke event name %q", ev.Name)
		}
		if calls.Load() != 3 {
			t.Errorf("handler ran %d times, want 3", calls.Load())
		}
		if _, err := b.eng.Invoke(b.ctx, "off", nil); !errors.Is(err, engine.ErrFunctionDisabled) {
			t.Errorf("invoke disabled: %v", err)
		}
		if _, err := b.eng.Invoke(b.ctx, "nope", nil); !errors.Is(err, engine.ErrUnknownFunction) {
			t.Errorf("invoke unknown: %v", err)
		}
		fns := map[string]engine.FunctionInfo{}
		// The counters follow the change stream asynchronously: give them a
		// moment, checking often.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			for _, f := range b.eng.Functions() {
				fns[f.ID] = f
			}
			if fns["idem"].Stats.RunsLastHour == 3 {
				break
			}
		}
		if s := fns["idem"].Stats; s.RunsLastHour != 3 || s.LastStatus != store.StatusCompleted || !s.LastRunAt.Equal(start) {
			t.Errorf("idem stats = %+v, want 3 completed runs in the last hour", s)
		}
		if f := fns["off"]; f.Disabled != "no token" || !f.NextCron.IsZero() {
			t.Errorf("disabled function listed as %+v", f)
		}
	})
}

func TestCronTimeZonesAndNextFire(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		h := func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil }
		b := setup(t, be, options{noPool: true},
			engine.Function{ID: "berlin-nine", Triggers: []engine.Trigger{{Cron: "TZ=Europe/Berlin 0 9 * * *"}}, Handler: h},
			engine.Function{ID: "utc-nine", Triggers: []engine.Trigger{{Cron: "0 9 * * *"}}, Handler: h},
			engine.Function{ID: "every-5s", Triggers: []engine.Trigger{{Cron: "*/5 * * * * *"}}, Handler: h},
		)
		want := map[string]time.Time{
			// 2026-03-04 is winter time in Berlin: 09:00 CET is 08:00 UTC.
			"berlin-nine": time.Date(2026, 3, 4, 8, 0, 0, 0, time.UTC),
			"utc-nine":    time.Date(2026, 3, 4, 9, 0, 0, 0, time.UTC),
			"every-5s":    time.Date(2026, 3, 4, 5, 6, 10, 0, time.UTC),
		}
		for _, f := range b.eng.Functions() {
			if !f.NextCron.Equal(want[f.ID]) {
				t.Errorf("%s: next fire %v, want %v", f.ID, f.NextCron, want[f.ID])
			}
		}
	})
}

func TestPulseCountsThisPoolsRuns(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		obs := &finishes{done: make(chan string, 4)}
		b := setup(t, be, options{observer: obs}, engine.Function{
			ID: "maybe", Triggers: []engine.Trigger{{Event: "test/maybe"}}, Retries: retries(0),
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				var in struct{ Fail bool }
				_ = json.Unmarshal(r.Event.Data, &in)
				if in.Fail {
					return nil, errors.New("asked to fail")
				}
				return "ok", nil
			},
		})
		b.send(t, "test/maybe", `{}`)
		b.send(t, "test/maybe", `{"fail":true}`)
		for range 2 {
			<-obs.done
		}
		p := b.eng.Pulse()
		last := len(p.Finished) - 1
		if p.Finished[last] != 2 || p.Failed[last] != 1 {
			t.Errorf("this second: finished %d failed %d, want 2 and 1", p.Finished[last], p.Failed[last])
		}
		if p.LagSamples != 2 || p.LagP99 != 0 {
			t.Errorf("lag samples %d p99 %v, want 2 and 0 (the clock stood still)", p.LagSamples, p.LagP99)
		}
	})
}

// TestLapsedLeaseInterruptsTheRun: a run whose lease lapsed before the
// pool's renewal (the clock jumps past it) is interrupted when the renewal
// finds the lease lost, then claimed again; its completed step is not run
// again.
func TestLapsedLeaseInterruptsTheRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		var begun, started atomic.Int32
		working, interrupted := make(chan struct{}), make(chan error)
		obs := &leaseLosses{}
		b := setup(t, be, options{noPool: true, observer: obs}, engine.Function{
			ID: "long", Triggers: []engine.Trigger{{Event: "test/long"}},
			Handler: func(ctx context.Context, r *engine.Run) (any, error) {
				if _, err := engine.Step(ctx, r, "begin", func(ctx context.Context) (int32, error) { return begun.Add(1), nil }); err != nil {
					return nil, err
				}
				if started.Add(1) == 1 {
					close(working)
					<-ctx.Done() // the first execution works until interrupted
					interrupted <- context.Cause(ctx)
					return nil, ctx.Err()
				}
				return "done", nil
			},
		})
		id := oneRun(t, b.send(t, "test/long", `{}`))
		b.startPool(t, 3*time.Second, "worker")
		select {
		case <-working:
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the first execution to start")
		}
		b.clock.Advance(3*time.Second + time.Millisecond)
		select {
		case cause := <-interrupted:
			if !strings.Contains(fmt.Sprint(cause), "lease lost") {
				t.Errorf("first execution interrupted by %v, want a lost lease", cause)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the first execution to be interrupted")
		}
		b.waitStatus(t, id, store.StatusCompleted)
		if n := obs.lost.Load(); n != 1 {
			t.Errorf("leases lost = %d, want 1", n)
		}
		if n := begun.Load(); n != 1 {
			t.Errorf("completed step begin ran %d times, want 1", n)
		}
	})
}

// finishes is an Observer that reports each finished run's status.
type finishes struct{ done chan string }

func (*finishes) RunStarted(string, time.Duration)          {}
func (*finishes) RunSkipped(string, string)                 {}
func (o *finishes) RunFinished(_, status string)            { o.done <- status }
func (*finishes) StepAttempt(string, string, time.Duration) {}
func (*finishes) LeaseLost()                                {}
func (*finishes) LeaseTakenOver()                           {}
func (*finishes) StepConflict(string)                       {}
func (*finishes) StoreError(string)                         {}

// leaseLosses is an Observer that counts lost leases.
type leaseLosses struct {
	lost atomic.Int32
}

func (*leaseLosses) RunStarted(string, time.Duration)          {}
func (*leaseLosses) RunSkipped(string, string)                 {}
func (*leaseLosses) RunFinished(string, string)                {}
func (*leaseLosses) StepAttempt(string, string, time.Duration) {}
func (o *leaseLosses) LeaseLost()                              { o.lost.Add(1) }
func (*leaseLosses) LeaseTakenOver()                           {}
func (*leaseLosses) StepConflict(string)                       {}
func (*leaseLosses) StoreError(string)                         {}

// TestCancelAsTheHandlerReturnsIsNoStoreError cancels a run while its
// handler is returning, before the cancel's change reaches the worker (the
// store wrapper holds back Cancelled changes): the worker's finish finds
// its lease gone, which is what a cancel does. It counted a store error
// (cyberdrew_store_errors_total{op="finish"}) and logged a warning for
// every such cancel.
func TestCancelAsTheHandlerReturnsIsNoStoreError(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		release := make(chan struct{})
		started := make(chan string, 1)
		errs := &storeErrors{}
		finishes := &atomic.Int32{}
		b := setup(t, be, options{observer: errs, wrap: func(st store.Store) store.Store { return noCancelChanges{st, finishes} }},
			engine.Function{ID: "quick", Triggers: []engine.Trigger{{Event: "test/quick"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) {
					started <- r.ID
					<-release
					return "done", nil
				}},
		)
		id := oneRun(t, b.send(t, "test/quick", `{}`))
		receive(t, started, "the run to start")
		if _, err := b.eng.Cancel(b.ctx, id); err != nil {
			t.Fatalf("cancel: %v", err)
		}
		close(release)
		deadline := time.Now().Add(10 * time.Second)
		for finishes.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the worker never tried to finish the run")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if r := b.run(t, id); r.Status != store.StatusCancelled {
			t.Errorf("status = %s, want Cancelled", r.Status)
		}
		// The worker counts an error right after Finish returns it; the
		// pool's stop waits for the worker.
		b.pool.Stop(b.ctx)
		if n := errs.finishes.Load(); n != 0 {
			t.Errorf("%d store errors counted for finishing a cancelled run", n)
		}
	})
}

// noCancelChanges is a store whose change stream never says a run was
// cancelled (a change that has not reached the worker yet), and that
// counts the calls to Finish.
type noCancelChanges struct {
	store.Store
	finishes *atomic.Int32
}

func (s noCancelChanges) Subscribe(ctx context.Context) <-chan store.Change {
	return withoutRunChanges(s.Store.Subscribe(ctx), store.StatusCancelled)
}

// withoutRunChanges passes on the changes of in but those saying a run
// took status st.
func withoutRunChanges(in <-chan store.Change, st store.Status) <-chan store.Change {
	out := make(chan store.Change, 64)
	go func() {
		defer close(out)
		for c := range in {
			if c.Kind == store.ChangeRun && c.Status == st {
				continue
			}
			out <- c
		}
	}()
	return out
}

func (s noCancelChanges) Finish(ctx context.Context, l *store.Lease, o store.Outcome) error {
	err := s.Store.Finish(ctx, l, o)
	s.finishes.Add(1)
	return err
}

// storeErrors is an Observer that counts the store errors of finishes.
type storeErrors struct{ finishes atomic.Int32 }

func (*storeErrors) RunStarted(string, time.Duration)          {}
func (*storeErrors) RunSkipped(string, string)                 {}
func (*storeErrors) RunFinished(string, string)                {}
func (*storeErrors) StepAttempt(string, string, time.Duration) {}
func (*storeErrors) LeaseLost()                                {}
func (*storeErrors) LeaseTakenOver()                           {}
func (*storeErrors) StepConflict(string)                       {}
func (o *storeErrors) StoreError(op string) {
	if op == "finish" {
		o.finishes.Add(1)
	}
}
