package tui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"

	"github.com/dcyfr/cyberdrew/internal/client"
)

func TestMain(m *testing.M) {
	// Clock times in the views are local: pin the zone for the goldens.
	time.Local = time.UTC
	os.Exit(m.Run())
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time {
	t := t0.Add(d)
	return &t
}

func queue(n int) *int { return &n }

// fakeSource serves fixed data and records the actions asked of it.
type fakeSource struct {
	mu        sync.Mutex
	stats     client.Stats
	functions []client.Function
	runs      []client.Run
	events    []client.StoredEvent
	details   map[string]client.RunDetail
	feed      *fakeFeed
	err       error // every read fails with it when set
	calls     []string
}

func (f *fakeSource) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return f.err
}

func (f *fakeSource) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeSource) URL() string { return "http://127.0.0.1:8288" }

func (f *fakeSource) Stats(context.Context) (client.Stats, error) {
	return f.stats, f.record("stats")
}

func (f *fakeSource) Functions(context.Context) ([]client.Function, error) {
	return f.functions, f.record("functions")
}

func (f *fakeSource) Runs(_ context.Context, fl client.RunFilter) (client.Page[client.Run], error) {
	return client.Page[client.Run]{Data: f.runs}, f.record(fmt.Sprintf("runs limit=%d", fl.Limit))
}

func (f *fakeSource) Run(_ context.Context, id string) (client.RunDetail, error) {
	if err := f.record("run " + id); err != nil {
		return client.RunDetail{}, err
	}
	d, ok := f.details[id]
	if !ok {
		return d, &client.APIError{Status: 404, Message: "not found"}
	}
	return d, nil
}

func (f *fakeSource) Events(_ context.Context, fl client.EventFilter) (client.Page[client.StoredEvent], error) {
	return client.Page[client.StoredEvent]{Data: f.events}, f.record(fmt.Sprintf("events limit=%d", fl.Limit))
}

func (f *fakeSource) Event(_ context.Context, id string) (client.StoredEvent, error) {
	err := f.record("event " + id)
	for _, e := range f.events {
		if e.InternalID == id {
			return e, err
		}
	}
	return client.StoredEvent{}, errors.Join(err, &client.APIError{Status: 404, Message: "not found"})
}

func (f *fakeSource) Subscribe(context.Context) (Feed, error) {
	if err := f.record("subscribe"); err != nil {
		return nil, err
	}
	return f.feed, nil
}

func (f *fakeSource) Cancel(_ context.Context, id string) (client.Run, error) {
	return client.Run{RunID: id, Status: "Cancelled"}, f.record("cancel " + id)
}

func (f *fakeSource) Rerun(_ context.Context, id string) (client.RunRef, error) {
	return client.RunRef{RunID: "01JNEWRUN0000000000RERUN01"}, f.record("rerun " + id)
}

func (f *fakeSource) Invoke(_ context.Context, fn string, data json.RawMessage) (client.Invocation, error) {
	return client.Invocation{RunIDs: []string{"01JNEWRUN00000000000INVOKE"}}, f.record(fmt.Sprintf("invoke %s %s", fn, data))
}

func (f *fakeSource) Send(_ context.Context, evs ...client.Event) ([]string, error) {
	return []string{"01JNEWEVENT000000000000SENT"}, f.record(fmt.Sprintf("send %s %s", evs[0].Name, evs[0].Data))
}

// fakeFeed is a stream the test writes into.
type fakeFeed struct {
	ch     chan client.Change
	err    error
	closed bool
}

func newFakeFeed() *fakeFeed { return &fakeFeed{ch: make(chan client.Change, 16)} }

func (f *fakeFeed) Changes() <-chan client.Change { return f.ch }
func (f *fakeFeed) Err() error                    { return f.err }
func (f *fakeFeed) Close()                        { f.closed = true }

// newFixture is a daemon with three functions, five runs, their events and
// one run's detail.
func newFixture() *fakeSource {
	st := client.Stats{At: t0, WindowSeconds: 300, Finished: make([]int, 300), Failed: make([]int, 300), QueueDepth: queue(2)}
	st.Store.Kind, st.Store.Healthy = "sqlite", true
	st.Workers.Busy, st.Workers.Size = 1, 4
	st.StartLag.P50Ms, st.StartLag.P99Ms, st.StartLag.Samples = 3, 42, 120
	for i := range 300 {
		st.Finished[i] = (i / 20) % 5
		if i%37 == 0 {
			st.Failed[i] = 1
		}
	}
	return &fakeSource{
		stats: st,
		functions: []client.Function{
			{ID: "hello-world", Name: "Hello World", Triggers: []client.Trigger{{Event: "test/hello.world"}},
				Stats: client.FunctionStats{RunsLastHour: 12, FailuresLastHour: 1, LastStatus: "Completed", LastRunAt: at(-30 * time.Second)}},
			{ID: "refresh-github-data", Name: "Refresh GitHub data", Triggers: []client.Trigger{{Cron: "*/5 * * * *"}},
				Disabled: "GITHUB_TOKEN is not set"},
			{ID: "calculate-trending", Name: "Calculate trending posts", Triggers: []client.Trigger{{Cron: "0 * * * *"}},
				NextCron: at(7 * time.Minute), Stats: client.FunctionStats{RunsLastHour: 1, LastStatus: "Failed", LastRunAt: at(-53 * time.Minute)}},
		},
		runs: []client.Run{
			{RunID: "01JN000000000000000000RUN5", FunctionID: "hello-world", EventID: "01JN0000000000000000000EV3", Status: "Queued", CreatedAt: at(-time.Second)},
			{RunID: "01JN000000000000000000RUN4", FunctionID: "hello-world", EventID: "01JN0000000000000000000EV2", Status: "Running", Attempt: 2,
				CreatedAt: at(-time.Minute), RunStartedAt: at(-50 * time.Second), AvailableAt: at(15 * time.Second)},
			{RunID: "01JN000000000000000000RUN3", FunctionID: "calculate-trending", EventID: "01JN0000000000000000000EV1", Status: "Failed", Attempt: 4,
				CreatedAt: at(-54 * time.Minute), RunStartedAt: at(-54 * time.Minute), EndedAt: at(-53 * time.Minute), Error: "boom"},
			{RunID: "01JN000000000000000000RUN2", FunctionID: "hello-world", EventID: "01JN0000000000000000000EV1", Status: "Sleeping",
				CreatedAt: at(-2 * time.Hour), RunStartedAt: at(-2 * time.Hour), AvailableAt: at(time.Hour)},
			{RunID: "01JN000000000000000000RUN1", FunctionID: "hello-world", EventID: "01JN0000000000000000000EV0", Status: "Completed",
				CreatedAt: at(-3 * time.Hour), RunStartedAt: at(-3 * time.Hour), EndedAt: at(-3*time.Hour + 1500*time.Millisecond)},
		},
		events: []client.StoredEvent{
			{InternalID: "01JN0000000000000000000EV3", Name: "test/hello.world", Data: json.RawMessage(`{"email":"c@d.e"}`), ReceivedAt: at(-time.Second)},
			{InternalID: "01JN0000000000000000000EV2", Name: "test/hello.world", Data: json.RawMessage(`{"email":"x@y.z"}`), ReceivedAt: at(-time.Minute)},
			{InternalID: "01JN0000000000000000000EV1", Name: "cyberdrew/scheduled.timer", Data: json.RawMessage(`{"cron":"0 * * * *"}`), ReceivedAt: at(-2 * time.Hour)},
			{InternalID: "01JN0000000000000000000EV0", Name: "test/hello.world", Data: json.RawMessage(`{"email":"a@b.c"}`), ReceivedAt: at(-3 * time.Hour)},
		},
		details: map[string]client.RunDetail{
			"01JN000000000000000000RUN1": {
				Run: client.Run{RunID: "01JN000000000000000000RUN1", FunctionID: "hello-world", EventID: "01JN0000000000000000000EV0", Status: "Completed",
					CreatedAt: at(-3 * time.Hour), RunStartedAt: at(-3 * time.Hour), EndedAt: at(-3*time.Hour + 1500*time.Millisecond),
					Output: json.RawMessage(`{"message":"Hello a@b.c!"}`)},
				Steps: []client.Step{
					{ID: "fetch", Name: "fetch", Kind: "run", Status: "Completed", StartedAt: at(-3 * time.Hour), EndedAt: at(-3*time.Hour + 200*time.Millisecond),
						Attempts: []client.Attempt{{StartedAt: at(-3 * time.Hour), EndedAt: at(-3*time.Hour + 100*time.Millisecond), Error: "timeout"},
							{StartedAt: at(-3*time.Hour + 150*time.Millisecond), EndedAt: at(-3*time.Hour + 200*time.Millisecond)}},
						Output: json.RawMessage(`{"n":3}`)},
					{ID: "wait-a-moment", Name: "wait-a-moment", Kind: "sleep", Status: "Completed", StartedAt: at(-3*time.Hour + 200*time.Millisecond),
						EndedAt: at(-3*time.Hour + 1200*time.Millisecond), WakeAt: at(-3*time.Hour + 1200*time.Millisecond)},
					{ID: "greet", Name: "greet", Kind: "run", Status: "Completed", StartedAt: at(-3*time.Hour + 1300*time.Millisecond), EndedAt: at(-3*time.Hour + 1400*time.Millisecond),
						Attempts: []client.Attempt{{StartedAt: at(-3*time.Hour + 1300*time.Millisecond), EndedAt: at(-3*time.Hour + 1400*time.Millisecond)}}},
				},
			},
		},
		feed: newFakeFeed(),
	}
}

// newTestModel is the dash over src at a fixed time, sized w×h, with every
// initial read applied.
func newTestModel(t *testing.T, src *fakeSource, w, h int) *Model {
	t.Helper()
	m := New(t.Context(), src, Options{
		Profile:  colorprofile.ASCII,
		Now:      func() time.Time { return t0 },
		Examples: []Example{{Name: "test/hello.world", Data: json.RawMessage(`{"email":"drew@example.com"}`)}, {Name: "blog/post.viewed", Data: json.RawMessage(`{"slug":"hello-world"}`)}},
	})
	t.Cleanup(m.stop)
	m.Update(tea.WindowSizeMsg{Width: w, Height: h})
	ctx := t.Context()
	for _, msg := range []tea.Msg{fetchStats(ctx, src)(), fetchFunctions(ctx, src)(), fetchRuns(ctx, src)(), connect(ctx, src)()} {
		m.Update(msg)
	}
	m.fetchingStats, m.fetchingFns, m.fetchingRuns, m.runsStale = false, false, false, false
	return m
}
