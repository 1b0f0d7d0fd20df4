package api_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/api"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	keys := api.Config{SigningKeys: []string{"signkey-prod-primary", "signkey-prod-fallback"}}
	tests := []struct {
		name   string
		cfg    api.Config
		auth   string
		status int
	}{
		{"dev mode is open", api.Config{}, "", http.StatusOK},
		{"dev mode ignores a token", api.Config{}, "Bearer anything", http.StatusOK},
		{"primary key", keys, "Bearer signkey-prod-primary", http.StatusOK},
		{"fallback key", keys, "Bearer signkey-prod-fallback", http.StatusOK},
		{"scheme in any case", keys, "bearer signkey-prod-primary", http.StatusOK},
		{"no header", keys, "", http.StatusUnauthorized},
		{"wrong key", keys, "Bearer signkey-prod-wrong", http.StatusUnauthorized},
		{"prefix of the key", keys, "Bearer signkey-prod-prim", http.StatusUnauthorized},
		{"not a bearer token", keys, "Basic signkey-prod-primary", http.StatusUnauthorized},
		{"empty token", keys, "Bearer ", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.cfg)
			for _, path := range []string{"/v1/events", "/v1/runs", "/v1/functions", "/v1/stats", "/v1/runs/run-1", "/v1/events/evt-a/runs"} {
				var headers []string
				if tt.auth != "" {
					headers = []string{"Authorization", tt.auth}
				}
				a := do(t, http.MethodGet, b.url+path, nil, headers...)
				if tt.status == http.StatusOK {
					if a.status != http.StatusOK {
						t.Errorf("GET %s: status = %d, body %s", path, a.status, a.body)
					}
					continue
				}
				wantError(t, a, tt.status, "bearer signing key")
				if strings.Contains(string(a.body), "signkey") {
					t.Errorf("GET %s: answer %s shows a key", path, a.body)
				}
			}
		})
	}

	t.Run("writes are guarded too", func(t *testing.T) {
		t.Parallel()
		b := setup(t, keys)
		for _, req := range [][2]string{
			{http.MethodDelete, "/v1/runs/run-2"},
			{http.MethodPost, "/v1/runs/run-1/rerun"},
			{http.MethodPost, "/v1/functions/hello-world/invoke"},
			{http.MethodGet, "/v1/stream"},
		} {
			a := do(t, req[0], b.url+req[1], nil)
			wantError(t, a, http.StatusUnauthorized, "bearer signing key")
		}
		b.eng.with(func(e *fakeEngine) {
			if r := e.runs["run-2"]; r.Status != store.StatusSleeping {
				t.Errorf("run-2 is %s after an unauthorized cancel", r.Status)
			}
			if len(e.invoked) != 0 {
				t.Errorf("invoked %v without a key", e.invoked)
			}
		})
	})
}

func TestHealth(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{SigningKeys: []string{"k"}, EventKeys: []string{"k"}})
	for _, path := range []string{"/health", "/healthz"} {
		a := do(t, http.MethodGet, b.url+path, nil)
		if a.status != http.StatusOK || string(a.body) != "{\"status\":\"ok\"}\n" {
			t.Errorf("GET %s = %d %s", path, a.status, a.body)
		}
	}
	a := do(t, http.MethodGet, b.url+"/readyz", nil)
	if a.status != http.StatusOK || string(a.body) != "{\"status\":\"ok\",\"store\":\"fake\"}\n" {
		t.Errorf("GET /readyz = %d %s", a.status, a.body)
	}

	b.st.with(func(s *fakeStore) { s.pingErr = errors.New("dial tcp 127.0.0.1:6379: connection refused") })
	a = do(t, http.MethodGet, b.url+"/readyz", nil)
	wantError(t, a, http.StatusServiceUnavailable, "store fake: dial tcp 127.0.0.1:6379: connection refused")
	if v := a.json(t); v["store"] != "fake" {
		t.Errorf("readyz body %s does not name the store", a.body)
	}
	a = do(t, http.MethodGet, b.url+"/healthz", nil)
	if a.status != http.StatusOK {
		t.Errorf("liveness = %d while the store is down, want 200", a.status)
	}
}

func TestRouting(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{})
	a := do(t, http.MethodGet, b.url+"/nope", nil)
	wantError(t, a, http.StatusNotFound, "no such route")
	a = do(t, http.MethodGet, b.url+"/v1/nope", nil)
	wantError(t, a, http.StatusNotFound, "no such route")

	a = do(t, http.MethodGet, b.url+"/e/anykey", nil)
	wantError(t, a, http.StatusMethodNotAllowed, "method not allowed")
	if allow := a.header.Get("Allow"); allow != "POST" {
		t.Errorf("Allow = %q, want POST", allow)
	}
	a = do(t, http.MethodPost, b.url+"/v1/runs/run-1", nil)
	wantError(t, a, http.StatusMethodNotAllowed, "method not allowed")
	if allow := a.header.Get("Allow"); !strings.Contains(allow, "DELETE") || !strings.Contains(allow, "GET") {
		t.Errorf("Allow = %q, want GET and DELETE", allow)
	}
}

// admin sends an admin request in dev mode and decodes its answer.
func admin(t *testing.T, b *bundle, method, path, body string) (answer, map[string]any) {
	t.Helper()
	var a answer
	if body == "" {
		a = do(t, method, b.url+path, nil)
	} else {
		a = do(t, method, b.url+path, strings.NewReader(body))
	}
	if a.status != http.StatusOK {
		return a, nil
	}
	return a, a.json(t)
}

// canonical re-encodes JSON so that two documents compare as text.
func canonical(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestAdminEvents(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{})

	a, _ := admin(t, b, http.MethodGet, "/v1/events?name=test/hello.world&since=2025-03-01T00:00:00Z&until=2025-03-02T00:00:00%2B01:00&limit=10&cursor=c1", "")
	want := `{"data":[
		{"internal_id":"evt-b","id":"evt-b","name":"test/hello.world","data":{"email":"x@y.z"},"user":{"id":7},"ts":1740830400000,"v":"2025-01-01.1","received_at":"2025-03-01T12:00:00Z"},
		{"internal_id":"evt-a","id":"client-1","name":"test/hello.world","data":{"email":"a@b.c"},"user":{},"ts":1740830400000,"v":"","received_at":"2025-03-01T12:00:00Z"}
	],"cursor":""}`
	if a.status != http.StatusOK || canonical(t, string(a.body)) != canonical(t, want) {
		t.Errorf("GET /v1/events = %d %s\nwant %s", a.status, a.body, want)
	}
	wantFilter := store.EventFilter{
		Name:   "test/hello.world",
		Since:  time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC),
		Until:  time.Date(2025, 3, 1, 23, 0, 0, 0, time.UTC),
		Limit:  10,
		Cursor: "c1",
	}
	var got store.EventFilter
	b.st.with(func(s *fakeStore) { got = s.evFilters[0] })
	if got.Name != wantFilter.Name || !got.Since.Equal(wantFilter.Since) ||
		!got.Until.Equal(wantFilter.Until) || got.Limit != wantFilter.Limit || got.Cursor != wantFilter.Cursor {
		t.Errorf("filter = %+v, want %+v", got, wantFilter)
	}

	a, v := admin(t, b, http.MethodGet, "/v1/events/evt-a", "")
	if a.status != http.StatusOK || v["data"].(map[string]any)["internal_id"] != "evt-a" {
		t.Errorf("GET /v1/events/evt-a = %d %s", a.status, a.body)
	}
	a, _ = admin(t, b, http.MethodGet, "/v1/events/evt-zzz", "")
	wantError(t, a, http.StatusNotFound, "not found")

	a, _ = admin(t, b, http.MethodGet, "/v1/events/evt-a/runs", "")
	wantRuns := `{"data":[
		{"run_id":"run-2","event_id":"evt-a","function_id":"contact","status":"Sleeping","run_started_at":"2025-03-01T12:00:01Z","ended_at":null,"output":null,
		 "attempt":1,"created_at":"2025-03-01T12:00:00Z","event_ids":["evt-a"],"available_at":"2025-03-01T13:00:00Z"},
		{"run_id":"run-1","event_id":"evt-a","function_id":"hello-world","status":"Completed","run_started_at":"2025-03-01T12:00:01Z","ended_at":"2025-03-01T12:00:03Z","output":{"message":"Hello a@b.c!"},
		 "attempt":0,"created_at":"2025-03-01T12:00:00Z","event_ids":["evt-a"],"available_at":null}
	]}`
	if a.status != http.StatusOK || canonical(t, string(a.body)) != canonical(t, wantRuns) {
		t.Errorf("GET /v1/events/evt-a/runs = %d %s\nwant %s", a.status, a.body, wantRuns)
	}
	a, _ = admin(t, b, http.MethodGet, "/v1/events/evt-zzz/runs", "")
	wantError(t, a, http.StatusNotFound, "not found")
}

func TestAdminRuns(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{})

	a, v := admin(t, b, http.MethodGet, "/v1/runs?function=hello-world&status=completed,Queued&since=2025-03-01T00:00:00Z&limit=1", "")
	if a.status != http.StatusOK {
		t.Fatalf("GET /v1/runs = %d %s", a.status, a.body)
	}
	if runs := v["data"].([]any); len(runs) != 1 || runs[0].(map[string]any)["run_id"] != "run-3" || v["cursor"] != "run-3" {
		t.Errorf("GET /v1/runs = %s, want run-3 and cursor run-3", a.body)
	}
	var f store.RunFilter
	b.st.with(func(s *fakeStore) { f = s.runFilters[0] })
	if f.FunctionID != "hello-world" || !reflect.DeepEqual(f.Statuses, []store.Status{store.StatusCompleted, store.StatusQueued}) ||
		!f.Since.Equal(time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)) || f.Limit != 1 {
		t.Errorf("filter = %+v", f)
	}
	_, v = admin(t, b, http.MethodGet, "/v1/runs?function=hello-world&status=completed,Queued&cursor=run-3", "")
	if runs := v["data"].([]any); len(runs) != 1 || runs[0].(map[string]any)["run_id"] != "run-1" || v["cursor"] != "" {
		t.Errorf("second page = %v", v)
	}

	a, _ = admin(t, b, http.MethodGet, "/v1/runs/run-1", "")
	wantDetail := `{"data":{
		"run_id":"run-1","event_id":"evt-a","function_id":"hello-world","status":"Completed","run_started_at":"2025-03-01T12:00:01Z","ended_at":"2025-03-01T12:00:03Z","output":{"message":"Hello a@b.c!"},
		"attempt":0,"created_at":"2025-03-01T12:00:00Z","event_ids":["evt-a"],"available_at":null,
		"steps":[{"id":"wait-a-moment","name":"wait-a-moment","kind":"sleep","status":"Completed",
			"attempts":[{"started_at":"2025-03-01T12:00:01Z","ended_at":"2025-03-01T12:00:01Z","error":"boom"},{"started_at":"2025-03-01T12:00:02Z","ended_at":"2025-03-01T12:00:02Z"}],
			"started_at":"2025-03-01T12:00:01Z","ended_at":"2025-03-01T12:00:02Z","output":null,"wake_at":"2025-03-01T12:00:02Z"}]
	}}`
	if a.status != http.StatusOK || canonical(t, string(a.body)) != canonical(t, wantDetail) {
		t.Errorf("GET /v1/runs/run-1 = %d %s\nwant %s", a.status, a.body, wantDetail)
	}
	a, v = admin(t, b, http.MethodGet, "/v1/runs/run-3", "")
	if steps := v["data"].(map[string]any)["steps"]; a.status != http.StatusOK || !reflect.DeepEqual(steps, []any{}) {
		t.Errorf("run without steps: steps = %#v, want []", steps)
	}
	a, _ = admin(t, b, http.MethodGet, "/v1/runs/run-zzz", "")
	wantError(t, a, http.StatusNotFound, "not found")
}

func TestAdminQueryErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		want string
	}{
		{"/v1/runs?limit=ten", "limit: must be an integer"},
		{"/v1/runs?limit=0", "limit: must be an integer"},
		{"/v1/runs?limit=1001", "limit: must be an integer"},
		{"/v1/runs?since=yesterday", "since: must be an RFC 3339 time"},
		{"/v1/runs?until=2025-03-01", "until: must be an RFC 3339 time"},
		{"/v1/runs?status=Completed,Done", `status: unknown run status "Done"`},
		{"/v1/runs?status=Waiting", `status: unknown run status "Waiting"`},
		{"/v1/events?limit=-5", "limit: must be an integer"},
		{"/v1/events?since=1740830400", "since: must be an RFC 3339 time"},
		{"/v1/events?until=soon", "until: must be an RFC 3339 time"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			b := setup(t, api.Config{})
			a := do(t, http.MethodGet, b.url+tt.path, nil)
			wantError(t, a, http.StatusBadRequest, tt.want)
		})
	}

	t.Run("the store refuses the cursor", func(t *testing.T) {
		t.Parallel()
		b := setup(t, api.Config{})
		b.st.with(func(s *fakeStore) { s.listErr = fmt.Errorf("fake: bad cursor: %w", store.ErrInvalid) })
		for _, path := range []string{"/v1/runs?cursor=garbage", "/v1/events?cursor=garbage"} {
			a := do(t, http.MethodGet, b.url+path, nil)
			wantError(t, a, http.StatusBadRequest, "bad cursor")
		}
	})
	t.Run("the store is down", func(t *testing.T) {
		t.Parallel()
		b := setup(t, api.Config{})
		b.st.with(func(s *fakeStore) { s.listErr = fmt.Errorf("fake: %w", store.ErrUnavailable) })
		a := do(t, http.MethodGet, b.url+"/v1/runs", nil)
		wantError(t, a, http.StatusServiceUnavailable, "store unavailable")
		if a.header.Get("Retry-After") != "1" {
			t.Errorf("Retry-After = %q", a.header.Get("Retry-After"))
		}
	})
}

func TestAdminRunActions(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{})

	a, v := admin(t, b, http.MethodDelete, "/v1/runs/run-2", "")
	if a.status != http.StatusOK {
		t.Fatalf("cancel = %d %s", a.status, a.body)
	}
	run := v["data"].(map[string]any)
	if run["run_id"] != "run-2" || run["status"] != "Cancelled" || run["ended_at"] != "2025-03-01T12:01:00Z" {
		t.Errorf("cancel = %s", a.body)
	}
	a, _ = admin(t, b, http.MethodDelete, "/v1/runs/run-2", "")
	wantError(t, a, http.StatusConflict, "already finished")
	a, _ = admin(t, b, http.MethodDelete, "/v1/runs/run-zzz", "")
	wantError(t, a, http.StatusNotFound, "not found")

	a, _ = admin(t, b, http.MethodPost, "/v1/runs/run-1/rerun", "")
	if a.status != http.StatusOK || canonical(t, string(a.body)) != canonical(t, `{"data":{"run_id":"run-rerun","function_id":"hello-world","status":"Queued"}}`) {
		t.Errorf("rerun = %d %s", a.status, a.body)
	}
	a, _ = admin(t, b, http.MethodPost, "/v1/runs/run-zzz/rerun", "")
	wantError(t, a, http.StatusNotFound, "not found")
}

func TestAdminFunctions(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{})
	a, v := admin(t, b, http.MethodGet, "/v1/functions", "")
	if a.status != http.StatusOK {
		t.Fatalf("GET /v1/functions = %d %s", a.status, a.body)
	}
	fns := v["data"].([]any)
	if len(fns) != 1 {
		t.Fatalf("functions = %s", a.body)
	}
	fn := fns[0].(map[string]any)
	if fn["id"] != "hello-world" || fn["name"] != "Hello world" ||
		!reflect.DeepEqual(fn["triggers"], []any{map[string]any{"event": "test/hello.world"}}) ||
		fn["stats"].(map[string]any)["runs_last_hour"] != float64(2) {
		t.Errorf("function = %s", a.body)
	}

	b.eng.with(func(e *fakeEngine) { e.functions = nil })
	a, _ = admin(t, b, http.MethodGet, "/v1/functions", "")
	if string(a.body) != "{\"data\":[]}\n" {
		t.Errorf("no functions = %s, want an empty list", a.body)
	}
}

func TestAdminInvoke(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		function string
		body     string
		status   int
		want     string // invoked data, or the error
	}{
		{"with data", "hello-world", `{"data":{"email":"a@b.c"}}`, http.StatusOK, `{"email":"a@b.c"}`},
		{"empty body", "hello-world", ``, http.StatusOK, `{}`},
		{"no data", "hello-world", `{}`, http.StatusOK, `{}`},
		{"null data", "hello-world", `{"data":null}`, http.StatusOK, `{}`},
		{"data not an object", "hello-world", `{"data":[1]}`, http.StatusBadRequest, "data: must be an object"},
		{"body not an object", "hello-world", `[1]`, http.StatusBadRequest, "the body must be an object"},
		{"malformed body", "hello-world", `{"data":`, http.StatusBadRequest, "malformed JSON"},
		{"unknown function", "nope", `{}`, http.StatusNotFound, "unknown function"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, api.Config{})
			a, v := admin(t, b, http.MethodPost, "/v1/functions/"+tt.function+"/invoke", tt.body)
			if tt.status != http.StatusOK {
				wantError(t, a, tt.status, tt.want)
				b.eng.with(func(e *fakeEngine) {
					if len(e.invoked) != 0 {
						t.Errorf("invoked %v", e.invoked)
					}
				})
				return
			}
			if a.status != http.StatusOK {
				t.Fatalf("invoke = %d %s", a.status, a.body)
			}
			if !reflect.DeepEqual(v, map[string]any{"data": map[string]any{"event_id": "evt-invoke", "run_ids": []any{"run-invoked"}}}) {
				t.Errorf("invoke = %s", a.body)
			}
			b.eng.with(func(e *fakeEngine) {
				if want := []invocation{{FunctionID: tt.function, Data: tt.want}}; !reflect.DeepEqual(e.invoked, want) {
					t.Errorf("invoked %v, want %v", e.invoked, want)
				}
			})
		})
	}

	t.Run("validation by the engine", func(t *testing.T) {
		t.Parallel()
		b := setup(t, api.Config{})
		b.eng.with(func(e *fakeEngine) { e.invokeErr = &engine.ValidationError{Field: "data.email", Reason: "is required"} })
		a, _ := admin(t, b, http.MethodPost, "/v1/functions/hello-world/invoke", "")
		wantError(t, a, http.StatusBadRequest, "event 0: data.email: is required")
	})
	t.Run("too large", func(t *testing.T) {
		t.Parallel()
		b := setup(t, api.Config{MaxEventSize: 64})
		a, _ := admin(t, b, http.MethodPost, "/v1/functions/hello-world/invoke", `{"data":{"s":"`+strings.Repeat("x", 64)+`"}}`)
		wantError(t, a, http.StatusRequestEntityTooLarge, "exceeds 64 bytes")
	})
}

type fakePool struct{ busy, size int }

func (p fakePool) Busy() int { return p.busy }
func (p fakePool) Size() int { return p.size }

func TestAdminStats(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{Workers: fakePool{busy: 3, size: 8}})
	finished, failed := make([]int, 300), make([]int, 300)
	finished[299], failed[299] = 5, 2
	b.eng.mu.Lock()
	b.eng.pulse = engine.Pulse{At: t0, Finished: finished, Failed: failed,
		LagP50: 1500 * time.Microsecond, LagP99: 40 * time.Millisecond, LagSamples: 9}
	b.eng.mu.Unlock()

	var got struct {
		Data struct {
			At    time.Time `json:"at"`
			Store struct {
				Kind    string `json:"kind"`
				Healthy bool   `json:"healthy"`
				Error   string `json:"error"`
			} `json:"store"`
			QueueDepth *int `json:"queue_depth"`
			Workers    struct{ Busy, Size int }
			Window     int   `json:"window_seconds"`
			Finished   []int `json:"finished_per_second"`
			Failed     []int `json:"failed_per_second"`
			Lag        struct {
				P50     float64 `json:"p50_ms"`
				P99     float64 `json:"p99_ms"`
				Samples int     `json:"samples"`
			} `json:"start_lag"`
		} `json:"data"`
	}
	a := do(t, http.MethodGet, b.url+"/v1/stats", nil)
	if err := json.Unmarshal(a.body, &got); err != nil || a.status != http.StatusOK {
		t.Fatalf("status %d body %s: %v", a.status, a.body, err)
	}
	d := got.Data
	if !d.At.Equal(t0) || d.Store.Kind != "fake" || !d.Store.Healthy || d.QueueDepth == nil || *d.QueueDepth != 1 {
		t.Errorf("at %v store %+v queue %v", d.At, d.Store, d.QueueDepth)
	}
	if d.Workers.Busy != 3 || d.Workers.Size != 8 || d.Window != 300 || d.Finished[299] != 5 || d.Failed[299] != 2 {
		t.Errorf("workers %+v window %d last finished %d failed %d", d.Workers, d.Window, d.Finished[299], d.Failed[299])
	}
	if d.Lag.P50 != 1.5 || d.Lag.P99 != 40 || d.Lag.Samples != 9 {
		t.Errorf("lag %+v", d.Lag)
	}

	b.st.with(func(s *fakeStore) { s.pingErr = errors.New("connection refused") })
	a = do(t, http.MethodGet, b.url+"/v1/stats", nil)
	v := a.json(t)["data"].(map[string]any)
	st := v["store"].(map[string]any)
	if a.status != http.StatusOK || st["healthy"] != false || st["error"] != "connection refused" || v["queue_depth"] != nil {
		t.Errorf("store down: status %d body %s", a.status, a.body)
	}
}

// TestAdminCancelledRunStepsAreNotRunning: the steps a cancelled run left
// unfinished show as Cancelled, the finished ones as they ended.
func TestAdminCancelledRunStepsAreNotRunning(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{})
	b.st.with(func(s *fakeStore) {
		s.runs["run-c"] = store.Run{ID: "run-c", FunctionID: "contact", EventID: "evt-a", Status: store.StatusCancelled,
			CreatedAt: t0, StartedAt: t0, EndedAt: t0.Add(time.Minute), Error: "no longer needed"}
		s.steps["run-c"] = []store.Step{
			{RunID: "run-c", ID: "sent", Name: "sent", Kind: store.StepRun, Status: store.StatusCompleted},
			{RunID: "run-c", ID: "retrying", Name: "retrying", Kind: store.StepRun, Status: store.StatusRunning},
			{RunID: "run-c", ID: "nap", Name: "nap", Kind: store.StepSleep, Status: store.StatusSleeping},
		}
	})
	a, v := admin(t, b, http.MethodGet, "/v1/runs/run-c", "")
	if a.status != http.StatusOK {
		t.Fatalf("GET /v1/runs/run-c = %d %s", a.status, a.body)
	}
	var got []string
	for _, st := range v["data"].(map[string]any)["steps"].([]any) {
		got = append(got, st.(map[string]any)["status"].(string))
	}
	if want := []string{"Completed", "Cancelled", "Cancelled"}; !reflect.DeepEqual(got, want) {
		t.Errorf("step statuses = %v, want %v", got, want)
	}
}
