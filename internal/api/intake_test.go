package api_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/api"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

type intakeAnswer struct {
	IDs    []string `json:"ids"`
	Status int      `json:"status"`
}

func TestIntakeAccepts(t *testing.T) {
	t.Parallel()
	hello := engine.IncomingEvent{Name: "test/hello.world", Data: json.RawMessage(`{"email":"a@b.c"}`)}
	tests := []struct {
		name    string
		cfg     api.Config
		path    string
		body    string
		headers []string
		wantIDs []string
		want    []engine.IncomingEvent
	}{
		{
			name:    "one event",
			path:    "/e/anykey",
			body:    `{"name":"test/hello.world","data":{"email":"a@b.c"}}`,
			wantIDs: []string{"evt-1"},
			want:    []engine.IncomingEvent{hello},
		},
		{
			name:    "curl form content type, with an event key set",
			cfg:     api.Config{EventKeys: []string{"anykey"}},
			path:    "/e/anykey",
			body:    `{"name":"test/hello.world","data":{"email":"a@b.c"}}`,
			headers: []string{"Content-Type", "application/x-www-form-urlencoded"},
			wantIDs: []string{"evt-1"},
			want:    []engine.IncomingEvent{hello},
		},
		{
			name:    "array in input order",
			path:    "/e/anykey",
			body:    `[{"name":"a/one"},{"name":"a/two","data":{"n":2}},{"name":"a/three"}]`,
			wantIDs: []string{"evt-1", "evt-2", "evt-3"},
			want: []engine.IncomingEvent{
				{Name: "a/one", Data: json.RawMessage(`{}`)},
				{Name: "a/two", Data: json.RawMessage(`{"n":2}`)},
				{Name: "a/three", Data: json.RawMessage(`{}`)},
			},
		},
		{
			name:    "every field",
			path:    "/e/anykey",
			body:    `{"id":"order-7","name":"shop/order.paid","data":{"total":12.5},"user":{"id":"u1"},"ts":1740830400000,"v":"2025-01-01.1"}`,
			wantIDs: []string{"evt-1"},
			want: []engine.IncomingEvent{{
				ID: "order-7", Name: "shop/order.paid", Data: json.RawMessage(`{"total":12.5}`),
				User: json.RawMessage(`{"id":"u1"}`), TS: 1740830400000, V: "2025-01-01.1",
			}},
		},
		{
			name:    "nulls count as absent",
			path:    "/e/anykey",
			body:    `{"id":null,"name":"a/b","data":null,"user":null,"ts":null,"v":null}`,
			wantIDs: []string{"evt-1"},
			want:    []engine.IncomingEvent{{Name: "a/b", Data: json.RawMessage(`{}`)}},
		},
		{
			name:    "the npm client's shape: meta, ts in exponent form, surrounding space",
			path:    "/e/anykey",
			body:    " \n" + `[{"name":"a/b","data":{},"ts":1.7e12,"meta":{"sessions":{}}}]` + "\n",
			wantIDs: []string{"evt-1"},
			want:    []engine.IncomingEvent{{Name: "a/b", Data: json.RawMessage(`{}`), TS: 1_700_000_000_000}},
		},
		{
			name:    "repeated client id answers the first event's id",
			path:    "/e/anykey",
			body:    `[{"id":"same","name":"a/b"},{"name":"a/c"},{"id":"same","name":"a/b"}]`,
			wantIDs: []string{"evt-1", "evt-2", "evt-1"},
			want: []engine.IncomingEvent{
				{ID: "same", Name: "a/b", Data: json.RawMessage(`{}`)},
				{Name: "a/c", Data: json.RawMessage(`{}`)},
				{ID: "same", Name: "a/b", Data: json.RawMessage(`{}`)},
			},
		},
		{name: "path without a key", path: "/e", body: `{"name":"a/b"}`, wantIDs: []string{"evt-1"}, want: []engine.IncomingEvent{{Name: "a/b", Data: json.RawMessage(`{}`)}}},
		{name: "path with an empty key", path: "/e/", body: `{"name":"a/b"}`, wantIDs: []string{"evt-1"}, want: []engine.IncomingEvent{{Name: "a/b", Data: json.RawMessage(`{}`)}}},
		{name: "key with a trailing slash", path: "/e/anykey/", body: `{"name":"a/b"}`, wantIDs: []string{"evt-1"}, want: []engine.IncomingEvent{{Name: "a/b", Data: json.RawMessage(`{}`)}}},
		{name: "the npm client's dummy key", path: "/e/NO_EVENT_KEY_SET", body: `{"name":"a/b"}`, wantIDs: []string{"evt-1"}, want: []engine.IncomingEvent{{Name: "a/b", Data: json.RawMessage(`{}`)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.cfg)
			a := do(t, http.MethodPost, b.url+tt.path, strings.NewReader(tt.body), tt.headers...)
			if a.status != http.StatusOK {
				t.Fatalf("status = %d, body %s", a.status, a.body)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var got intakeAnswer
			if err := json.Unmarshal(a.body, &got); err != nil {
				t.Fatal(err)
			}
			if got.Status != 200 || !reflect.DeepEqual(got.IDs, tt.wantIDs) {
				t.Errorf("answer = %+v, want ids %v and status 200", got, tt.wantIDs)
			}
			if pub := b.eng.publishedEvents(); !reflect.DeepEqual(pub, tt.want) {
				t.Errorf("published %+v\nwant      %+v", pub, tt.want)
			}
		})
	}
}

func TestIntakeRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want string
	}{
		{"empty body", ``, "body is empty"},
		{"blank body", " \n ", "body is empty"},
		{"malformed JSON", `{"name":"a/b"`, "malformed JSON"},
		{"trailing garbage", `{"name":"a/b"} x`, "malformed JSON"},
		{"two objects", `{"name":"a/b"}{"name":"a/c"}`, "malformed JSON"},
		{"malformed array", `[{"name":"a/b"},]`, "malformed JSON"},
		{"string body", `"a/b"`, "event object or an array"},
		{"null body", `null`, "event object or an array"},
		{"empty array", `[]`, "array is empty"},
		{"number element", `[{"name":"a/b"},42]`, "event 1: must be a JSON object"},
		{"null element", `[null]`, "event 0: must be a JSON object"},
		{"array element", `[[{"name":"a/b"}]]`, "event 0: must be a JSON object"},
		{"missing name", `{"data":{}}`, "event 0: name: is required"},
		{"null name", `{"name":null}`, "event 0: name: is required"},
		{"empty name", `{"name":""}`, "event 0: name: must not be empty"},
		{"number name", `{"name":7}`, "event 0: name: must be a string"},
		{"reserved inngest/ prefix", `{"name":"inngest/function.failed"}`, "event 0: name: the inngest/ prefix is reserved"},
		{"reserved cyberdrew/ prefix", `{"name":"cyberdrew/scheduled.timer"}`, "event 0: name: the cyberdrew/ prefix is reserved"},
		{"data array", `{"name":"a/b","data":[1]}`, "event 0: data: must be an object"},
		{"data string", `{"name":"a/b","data":"x"}`, "event 0: data: must be an object"},
		{"user string", `{"name":"a/b","user":"u1"}`, "event 0: user: must be an object"},
		{"negative ts", `{"name":"a/b","ts":-1}`, "event 0: ts: must be a non-negative integer"},
		{"fractional ts", `{"name":"a/b","ts":1.5}`, "event 0: ts: must be a non-negative integer"},
		{"string ts", `{"name":"a/b","ts":"1740830400000"}`, "event 0: ts: must be a non-negative integer"},
		{"huge ts", `{"name":"a/b","ts":1e300}`, "event 0: ts: must be a non-negative integer"},
		{"ts after year 9999", `{"name":"a/b","ts":253402300800000}`, "event 0: ts: must be no later than 253402300799999 (9999-12-31T23:59:59.999Z)"},
		{"number id", `{"name":"a/b","id":7}`, "event 0: id: must be a string"},
		{"number v", `{"name":"a/b","v":1}`, "event 0: v: must be a string"},
		{"one bad event rejects the batch", `[{"name":"a/b"},{"name":"a/c"},{"name":"a/d","data":"x"}]`, "event 2: data: must be an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, api.Config{})
			a := do(t, http.MethodPost, b.url+"/e/anykey", strings.NewReader(tt.body))
			wantIntakeError(t, a, http.StatusBadRequest, tt.want)
			if pub := b.eng.publishedEvents(); len(pub) != 0 {
				t.Errorf("published %d events from a rejected request", len(pub))
			}
		})
	}
}

// chunked hides a reader's length, so the body is sent without
// Content-Length.
type chunked struct{ io.Reader }

func TestIntakeTooLarge(t *testing.T) {
	t.Parallel()
	cfg := api.Config{MaxEventSize: 1 << 10, MaxRequestSize: 4 << 10, MaxBatch: 3}
	event := func(dataLen int) string {
		return fmt.Sprintf(`{"name":"a/b","data":{"s":%q}}`, strings.Repeat("x", dataLen))
	}
	batch := func(n, dataLen int) string {
		evs := make([]string, n)
		for i := range evs {
			evs[i] = event(dataLen)
		}
		return "[" + strings.Join(evs, ",") + "]"
	}
	tests := []struct {
		name string
		body io.Reader
		want string
	}{
		{"one event over the event limit", strings.NewReader(event(1 << 10)), "event 0 is"},
		{"an event in a batch over the event limit", strings.NewReader("[" + event(100) + "," + event(1<<10) + "]"), "event 1 is"},
		{"request over the request limit", strings.NewReader(batch(3, 1500)), "request body exceeds 4096 bytes"},
		{"request over the request limit, chunked", chunked{strings.NewReader(batch(3, 1500))}, "request body exceeds 4096 bytes"},
		{"too many events", strings.NewReader(batch(4, 10)), "4 events exceed the limit of 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, cfg)
			a := do(t, http.MethodPost, b.url+"/e/anykey", tt.body)
			wantIntakeError(t, a, http.StatusRequestEntityTooLarge, tt.want)
			if pub := b.eng.publishedEvents(); len(pub) != 0 {
				t.Errorf("published %d events from a rejected request", len(pub))
			}
		})
	}

	t.Run("at the limits", func(t *testing.T) {
		t.Parallel()
		b := setup(t, cfg)
		ev := event(1<<10 - len(event(0)))
		a := do(t, http.MethodPost, b.url+"/e/anykey", strings.NewReader("["+ev+","+ev+","+ev+"]"))
		if a.status != http.StatusOK {
			t.Fatalf("status = %d, body %s", a.status, a.body)
		}
		if n := len(b.eng.publishedEvents()); n != 3 {
			t.Errorf("published %d events, want 3", n)
		}
	})
}

func TestIntakeEventKey(t *testing.T) {
	t.Parallel()
	const body = `{"name":"a/b"}`
	keys := api.Config{EventKeys: []string{"key-primary", "key-second"}}
	tests := []struct {
		name   string
		cfg    api.Config
		path   string
		status int
	}{
		{"dev mode takes any key", api.Config{}, "/e/whatever", http.StatusOK},
		{"dev mode takes no key", api.Config{}, "/e", http.StatusOK},
		{"first key", keys, "/e/key-primary", http.StatusOK},
		{"second key", keys, "/e/key-second", http.StatusOK},
		{"wrong key", keys, "/e/key-primar", http.StatusUnauthorized},
		{"longer key", keys, "/e/key-primary2", http.StatusUnauthorized},
		{"no key", keys, "/e", http.StatusUnauthorized},
		{"empty key", keys, "/e/", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.cfg)
			a := do(t, http.MethodPost, b.url+tt.path, strings.NewReader(body))
			if tt.status == http.StatusOK {
				if a.status != http.StatusOK {
					t.Fatalf("status = %d, body %s", a.status, a.body)
				}
				return
			}
			wantIntakeError(t, a, tt.status, "event key not found")
			if strings.Contains(string(a.body), "key-primary") {
				t.Errorf("answer %s shows a configured key", a.body)
			}
			if pub := b.eng.publishedEvents(); len(pub) != 0 {
				t.Errorf("published %d events from a rejected request", len(pub))
			}
		})
	}
}

func TestIntakeEngineErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		err        error
		status     int
		want       string
		retryAfter string
	}{
		{
			name:   "a known event with a bad field",
			err:    &engine.ValidationError{Index: 1, Field: "data.email", Reason: "must be a string"},
			status: http.StatusBadRequest,
			want:   "event 1: data.email: must be a string",
		},
		{
			name:       "store down",
			err:        fmt.Errorf("engine: publish: %w", fmt.Errorf("redis: dial: %w", store.ErrUnavailable)),
			status:     http.StatusServiceUnavailable,
			want:       "store unavailable",
			retryAfter: "1",
		},
		{
			name:   "anything else",
			err:    errors.New("sqlite: disk I/O error at /secret/path"),
			status: http.StatusInternalServerError,
			want:   "internal error",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, api.Config{})
			b.eng.with(func(e *fakeEngine) { e.publishErr = tt.err })
			a := do(t, http.MethodPost, b.url+"/e/anykey", strings.NewReader(`[{"name":"a/b"},{"name":"a/c"}]`))
			wantIntakeError(t, a, tt.status, tt.want)
			if got := a.header.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
			if strings.Contains(string(a.body), "secret") {
				t.Errorf("answer %s shows the internal error", a.body)
			}
		})
	}
}

// TestIntakeSeedDatedFarAheadIsNotUsed: a seed gives the request's events
// ids of its time, and an id dates its event, so a seed more than a day
// ahead of the engine's clock is not used (its events get ids of their
// own), while one within the day is.
func TestIntakeSeedDatedFarAheadIsNotUsed(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name   string
		ahead  time.Duration
		seeded bool
	}{
		{"an hour ahead", time.Hour, true},
		{"a day and a minute ahead", 24*time.Hour + time.Minute, false},
		{"a year behind", -365 * 24 * time.Hour, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, api.Config{Clock: clockwork.NewFakeClockAt(now)})
			seed := fmt.Sprintf("%d,AAECAwQFBgcICQ==", now.Add(tt.ahead).UnixMilli())
			a := do(t, http.MethodPost, b.url+"/e/anykey", strings.NewReader(`{"name":"a/b"}`), "X-Inngest-Event-Id-Seed", seed)
			if a.status != http.StatusOK {
				t.Fatalf("intake = %d %s", a.status, a.body)
			}
			pub := b.eng.publishedEvents()
			if len(pub) != 1 || (pub[0].InternalID != "") != tt.seeded {
				t.Errorf("published %+v, want an id from the seed: %v", pub, tt.seeded)
			}
		})
	}
}
