package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/api"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// fakeEngine records what the HTTP surface asks of the engine. Publish gives
// event ids "evt-1", "evt-2", … and answers a repeated client id with the
// first event's id, as the real engine does.
type fakeEngine struct {
	mu         sync.Mutex
	published  [][]engine.IncomingEvent
	byClientID map[string]string
	next       int
	publishErr error

	invoked   []invocation
	invokeErr error

	runs      map[string]store.Run // Cancel and Rerun look here
	functions []engine.FunctionInfo
	pulse     engine.Pulse
}

type invocation struct {
	FunctionID string
	Data       string
}

func (e *fakeEngine) Publish(_ context.Context, evs []engine.IncomingEvent) ([]engine.Accepted, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.publishErr != nil {
		return nil, e.publishErr
	}
	e.published = append(e.published, evs)
	out := make([]engine.Accepted, len(evs))
	for i, ev := range evs {
		if id, ok := e.byClientID[ev.ID]; ok && ev.ID != "" {
			out[i] = engine.Accepted{EventID: id, Duplicate: true}
			continue
		}
		e.next++
		id := fmt.Sprintf("evt-%d", e.next)
		if ev.ID != "" {
			e.byClientID[ev.ID] = id
		}
		out[i] = engine.Accepted{EventID: id}
	}
	return out, nil
}

// with runs fn under the engine's lock, for tests to set or read its fields.
func (e *fakeEngine) with(fn func(e *fakeEngine)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fn(e)
}

// publishedEvents is every event published, across requests.
func (e *fakeEngine) publishedEvents() []engine.IncomingEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	var all []engine.IncomingEvent
	for _, evs := range e.published {
		all = append(all, evs...)
	}
	return all
}

func (e *fakeEngine) Invoke(_ context.Context, functionID string, data json.RawMessage) (engine.Accepted, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.invokeErr != nil {
		return engine.Accepted{}, e.invokeErr
	}
	if !slices.ContainsFunc(e.functions, func(f engine.FunctionInfo) bool { return f.ID == functionID }) {
		return engine.Accepted{}, fmt.Errorf("engine: invoke %q: %w", functionID, engine.ErrUnknownFunction)
	}
	e.invoked = append(e.invoked, invocation{FunctionID: functionID, Data: string(data)})
	return engine.Accepted{EventID: "evt-invoke", Runs: []store.RunRef{{ID: "run-invoked", FunctionID: functionID, Status: store.StatusQueued}}}, nil
}

func (e *fakeEngine) Rerun(_ context.Context, runID string) (store.RunRef, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.runs[runID]
	if !ok {
		return store.RunRef{}, fmt.Errorf("engine: rerun %q: %w", runID, store.ErrNotFound)
	}
	return store.RunRef{ID: "run-rerun", FunctionID: r.FunctionID, Status: store.StatusQueued}, nil
}

func (e *fakeEngine) Cancel(_ context.Context, runID string) (store.Run, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.runs[runID]
	switch {
	case !ok:
		return store.Run{}, fmt.Errorf("engine: cancel %q: %w", runID, store.ErrNotFound)
	case r.Status.Finished():
		return store.Run{}, fmt.Errorf("engine: cancel %q: %w", runID, store.ErrFinished)
	}
	r.Status = store.StatusCancelled
	r.EndedAt = r.CreatedAt.Add(time.Minute)
	e.runs[runID] = r
	return r, nil
}

func (e *fakeEngine) Functions() []engine.FunctionInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.functions
}

func (e *fakeEngine) SeededIDs(seed string, n int) []string { return engine.SeededIDs(seed, n) }

func (e *fakeEngine) Pulse() engine.Pulse {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pulse
}

// fakeStore serves fixed events, runs and steps, records the filters it is
// asked for, and hands each subscription's channel to the test.
type fakeStore struct {
	mu          sync.Mutex
	events      map[string]store.Event
	runs        map[string]store.Run
	steps       map[string][]store.Step
	runFilters  []store.RunFilter
	evFilters   []store.EventFilter
	listErr     error
	pingErr     error
	subscribers chan subscription
}

type subscription struct {
	ctx context.Context
	ch  chan store.Change
}

// with runs fn under the store's lock, for tests to set or read its fields.
func (s *fakeStore) with(fn func(s *fakeStore)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s)
}

func (s *fakeStore) GetEvent(_ context.Context, id string) (store.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.events[id]
	if !ok {
		return store.Event{}, fmt.Errorf("fake: event %q: %w", id, store.ErrNotFound)
	}
	return e, nil
}

// EventByClientID finds the newest event sent with the client id.
func (s *fakeStore) EventByClientID(_ context.Context, clientID string) (store.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var found store.Event
	for _, e := range s.events {
		if clientID != "" && e.ClientID == clientID && e.ID > found.ID {
			found = e
		}
	}
	if found.ID == "" {
		return store.Event{}, fmt.Errorf("fake: client id %q: %w", clientID, store.ErrNotFound)
	}
	return found, nil
}

func (s *fakeStore) ListEvents(_ context.Context, f store.EventFilter) (store.Page[store.Event], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.evFilters = append(s.evFilters, f)
	if s.listErr != nil {
		return store.Page[store.Event]{}, s.listErr
	}
	var p store.Page[store.Event]
	for _, e := range s.events {
		if f.Name == "" || e.Name == f.Name {
			p.Items = append(p.Items, e)
		}
	}
	slices.SortFunc(p.Items, func(a, b store.Event) int { return strings.Compare(b.ID, a.ID) })
	return p, nil
}

func (s *fakeStore) GetRun(_ context.Context, id string) (store.Run, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.runs[id]
	if !ok {
		return store.Run{}, fmt.Errorf("fake: run %q: %w", id, store.ErrNotFound)
	}
	return r, nil
}

// ListRuns pages one run at a time, so that callers must follow cursors.
func (s *fakeStore) ListRuns(_ context.Context, f store.RunFilter) (store.Page[store.Run], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.runFilters = append(s.runFilters, f)
	if s.listErr != nil {
		return store.Page[store.Run]{}, s.listErr
	}
	var match []store.Run
	for _, r := range s.runs {
		if (f.EventID == "" || slices.Contains(r.EventIDs, f.EventID)) &&
			(f.FunctionID == "" || r.FunctionID == f.FunctionID) &&
			(len(f.Statuses) == 0 || slices.Contains(f.Statuses, r.Status)) &&
			(f.Cursor == "" || r.ID < f.Cursor) {
			match = append(match, r)
		}
	}
	slices.SortFunc(match, func(a, b store.Run) int { return strings.Compare(b.ID, a.ID) })
	var p store.Page[store.Run]
	if len(match) > 0 {
		p.Items = match[:1]
		if len(match) > 1 {
			p.Cursor = match[0].ID
		}
	}
	return p, nil
}

func (s *fakeStore) Steps(_ context.Context, runID string) ([]store.Step, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.steps[runID], nil
}

func (s *fakeStore) Subscribe(ctx context.Context) <-chan store.Change {
	ch := make(chan store.Change, 16)
	s.subscribers <- subscription{ctx: ctx, ch: ch}
	return ch
}

func (s *fakeStore) Ping(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pingErr
}

func (s *fakeStore) Kind() string { return "fake" }

func (s *fakeStore) QueueDepth(context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.runs {
		if r.Status == store.StatusQueued {
			n++
		}
	}
	return n, nil
}

var (
	t0     = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	output = json.RawMessage(`{"message":"Hello a@b.c!"}`)
)

func newFakes() (*fakeEngine, *fakeStore) {
	runs := map[string]store.Run{
		"run-1": {
			ID: "run-1", FunctionID: "hello-world", EventID: "evt-a", EventIDs: []string{"evt-a"},
			Status: store.StatusCompleted, CreatedAt: t0, StartedAt: t0.Add(time.Second),
			EndedAt: t0.Add(3 * time.Second), Output: output,
		},
		"run-2": {
			ID: "run-2", FunctionID: "contact", EventID: "evt-a", EventIDs: []string{"evt-a"},
			Status: store.StatusSleeping, Attempt: 1, CreatedAt: t0, StartedAt: t0.Add(time.Second),
			AvailableAt: t0.Add(time.Hour),
		},
		"run-3": {
			ID: "run-3", FunctionID: "hello-world", EventID: "evt-b", EventIDs: []string{"evt-b"},
			Status: store.StatusQueued, CreatedAt: t0.Add(time.Minute), AvailableAt: t0.Add(time.Minute),
		},
	}
	st := &fakeStore{
		events: map[string]store.Event{
			"evt-a": {ID: "evt-a", ClientID: "client-1", Name: "test/hello.world", Data: json.RawMessage(`{"email":"a@b.c"}`), TS: t0.UnixMilli(), ReceivedAt: t0},
			"evt-b": {ID: "evt-b", Name: "test/hello.world", Data: json.RawMessage(`{"email":"x@y.z"}`), User: json.RawMessage(`{"id":7}`), TS: t0.UnixMilli(), Version: "2025-01-01.1", ReceivedAt: t0},
		},
		runs: runs,
		steps: map[string][]store.Step{
			"run-1": {{
				RunID: "run-1", ID: "wait-a-moment", Name: "wait-a-moment", Kind: store.StepSleep,
				Status: store.StatusCompleted, StartedAt: t0.Add(time.Second), EndedAt: t0.Add(2 * time.Second),
				WakeAt: t0.Add(2 * time.Second),
				Attempts: []store.Attempt{
					{StartedAt: t0.Add(time.Second), EndedAt: t0.Add(time.Second), Error: "boom"},
					{StartedAt: t0.Add(2 * time.Second), EndedAt: t0.Add(2 * time.Second)},
				},
				Output: json.RawMessage(`null`),
			}},
		},
		subscribers: make(chan subscription, 4),
	}
	eng := &fakeEngine{
		byClientID: map[string]string{},
		runs:       runs,
		functions: []engine.FunctionInfo{{
			Function: engine.Function{ID: "hello-world", Name: "Hello world", Triggers: []engine.Trigger{{Event: "test/hello.world"}}},
			Stats:    engine.FunctionStats{RunsLastHour: 2, LastStatus: store.StatusCompleted},
		}},
	}
	return eng, st
}

// bundle is one server under test with its fakes.
type bundle struct {
	url string
	eng *fakeEngine
	st  *fakeStore
}

// newTestLogger writes to the test's log, shown when it fails.
func newTestLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func setup(t *testing.T, cfg api.Config) *bundle {
	t.Helper()
	eng, st := newFakes()
	logger := newTestLogger(t)
	srv := httptest.NewServer(api.New(cfg, eng, st, logger))
	t.Cleanup(srv.Close)
	return &bundle{url: srv.URL, eng: eng, st: st}
}

// answer is a response read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into a generic value.
func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", a.body, err)
	}
	return v
}

// do sends a request; headers come in name, value pairs ("Host" sets the
// request's Host).
func do(t *testing.T, method, url string, body io.Reader, headers ...string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if method != http.MethodGet {
		// As the clients do: a write without it is refused as cross-site
		// in dev mode. headers may replace it.
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// wantError checks an error answer: its status, that it is JSON
// {"error": "…"}, and that the message holds want. It returns the decoded
// body.
func wantError(t *testing.T, a answer, status int, want string) map[string]any {
	t.Helper()
	if a.status != status {
		t.Fatalf("status = %d, want %d (body %s)", a.status, status, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	v := a.json(t)
	msg, _ := v["error"].(string)
	if msg == "" || !strings.Contains(msg, want) {
		t.Errorf("error = %q, want it to contain %q", msg, want)
	}
	return v
}

// wantIntakeError checks an event API error answer, which also carries the
// status in its body as Inngest's does.
func wantIntakeError(t *testing.T, a answer, status int, want string) {
	t.Helper()
	v := wantError(t, a, status, want)
	if got, _ := v["status"].(float64); int(got) != status {
		t.Errorf("body status = %v, want %d", v["status"], status)
	}
}
