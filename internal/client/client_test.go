package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/client"
	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/daemon/daemontest"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/wire"
)

// blogPost is triggered by a wildcard, records a step, then waits for a
// review, so that its run shows every field of a step.
var blogPost = engine.Function{
	ID: "blog-post", Name: "Blog post", Triggers: []engine.Trigger{{Event: "blog/*"}},
	Handler: func(ctx context.Context, r *engine.Run) (any, error) {
		n, err := engine.Step(ctx, r, "count", func(context.Context) (int, error) { return 1, nil })
		if err != nil {
			return nil, err
		}
		_, err = r.WaitForEvent(ctx, "review", engine.WaitOptions{Event: "review/done", Match: "data.post", Timeout: time.Hour})
		return n, err
	},
}

// flowControlled shows every field of a function: flow control, retries,
// a finish timeout and a cron trigger.
var flowControlled = engine.Function{
	ID: "flow-controlled", Name: "Flow controlled",
	Triggers:      []engine.Trigger{{Event: "flow/go"}, {Cron: "0 3 * * *"}},
	Retries:       new(2),
	Concurrency:   &engine.Concurrency{Limit: 2, Key: "event.data.k"},
	RateLimit:     &engine.RateLimit{Limit: 5, Period: time.Minute, Key: "event.data.k"},
	Debounce:      &engine.Debounce{Period: time.Second, Key: "event.data.k", MaxWait: time.Minute},
	Idempotency:   "event.data.k",
	Singleton:     &engine.Singleton{Key: "event.data.k"},
	FinishTimeout: time.Hour,
	Handler:       func(context.Context, *engine.Run) (any, error) { return nil, nil },
}

// start runs a daemon with the two functions and returns its client and
// base URL.
func start(t *testing.T) (*client.Client, string) {
	t.Helper()
	cfg := config.DefaultServe(func(string) string { return "" })
	cfg.Addr, cfg.DataDir, cfg.Workers, cfg.ShutdownTimeout = "127.0.0.1:0", t.TempDir(), 2, 2*time.Second
	d := daemontest.Run(t, cfg, nil, daemon.Options{Functions: []engine.Function{blogPost, flowControlled}})
	base := "http://" + d.Addr()
	c, err := client.New(client.Options{URL: base})
	if err != nil {
		t.Fatal(err)
	}
	return c, base
}

// TestTriggerMatchesWhatTheEngineRuns sends events by name and checks that
// the client's trigger matching predicts exactly the runs the daemon starts.
func TestTriggerMatchesWhatTheEngineRuns(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c, _ := start(t)
	fns, err := c.Functions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var trigger client.Trigger
	for _, fn := range fns {
		if fn.ID == blogPost.ID {
			trigger = fn.Triggers[0]
		}
	}
	if trigger.Event != "blog/*" {
		t.Fatalf("functions = %+v, want blog-post triggered by blog/*", fns)
	}
	for _, name := range []string{"blog/post", "blog/a/b", "blog/", "blog", "blogpost", "news/blog/x", "BLOG/post"} {
		ids, err := c.Send(ctx, client.Event{Name: name})
		if err != nil {
			t.Fatalf("send %s: %v", name, err)
		}
		runs, err := c.EventRuns(ctx, ids[0])
		if err != nil {
			t.Fatal(err)
		}
		if ran, predicted := len(runs) > 0, trigger.Matches(name); ran != predicted {
			t.Errorf("event %q: the daemon started %d runs, the client predicts a run: %v", name, len(runs), predicted)
		}
	}
}

// TestWireRoundTrip reads every admin answer of a real daemon, decodes it
// into its wire type refusing unknown fields, and encodes it again: nothing
// the API says is lost or added.
func TestWireRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c, base := start(t)

	s, err := c.Stream(ctx, client.StreamFilter{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ids, err := c.Send(ctx, client.Event{Name: "blog/first", Data: json.RawMessage(`{"post":7}`), User: json.RawMessage(`{"id":"u1"}`)})
	if err != nil {
		t.Fatal(err)
	}
	var runID string
	for ch := range s.Changes() {
		if ch.FunctionID == blogPost.ID && ch.Status == wire.StatusSleeping {
			runID = ch.RunID
			break
		}
	}
	if runID == "" {
		t.Fatalf("the stream ended before the run waited: %v", s.Err())
	}

	tests := []struct {
		method, path, body string
		status             int
		into               any
		check              func(t *testing.T, v any)
	}{
		{http.MethodPost, "/e/dev", `{"name":"other/thing"}`, http.StatusOK, new(wire.Sent), nil},
		{http.MethodPost, "/e/dev", `{"name":""}`, http.StatusBadRequest, new(wire.Error), nil},
		{http.MethodGet, "/v1/events", "", http.StatusOK, new(wire.Page[wire.Event]), nil},
		{http.MethodGet, "/v1/events/" + ids[0], "", http.StatusOK, new(wire.Data[wire.Event]), func(t *testing.T, v any) {
			e := v.(*wire.Data[wire.Event]).Data
			if e.ID != ids[0] || e.Name != "blog/first" || e.ReceivedAt == nil || string(e.User) != `{"id":"u1"}` {
				t.Errorf("event = %+v", e)
			}
		}},
		{http.MethodGet, "/v1/events/" + ids[0] + "/runs", "", http.StatusOK, new(wire.Data[[]wire.Run]), nil},
		{http.MethodGet, "/v1/runs?limit=10", "", http.StatusOK, new(wire.Page[wire.Run]), nil},
		{http.MethodGet, "/v1/runs/" + runID, "", http.StatusOK, new(wire.Data[wire.RunDetail]), func(t *testing.T, v any) {
			d := v.(*wire.Data[wire.RunDetail]).Data
			if d.Status != wire.StatusSleeping || len(d.Steps) != 2 || d.CreatedAt == nil || d.RunStartedAt == nil {
				t.Fatalf("run = %+v", d)
			}
			count, review := d.Steps[0], d.Steps[1]
			if string(count.Output) != "1" || len(count.Attempts) != 1 || count.Attempts[0].EndedAt == nil {
				t.Errorf("step count = %+v", count)
			}
			if review.Wait == nil || review.Wait.Event != "review/done" || string(review.Wait.MatchValue) != "7" || review.WakeAt == nil {
				t.Errorf("step review = %+v (wait %+v)", review, review.Wait)
			}
		}},
		{http.MethodGet, "/v1/runs/nope", "", http.StatusNotFound, new(wire.Error), nil},
		{http.MethodGet, "/v1/functions", "", http.StatusOK, new(wire.Data[[]wire.Function]), func(t *testing.T, v any) {
			fns := v.(*wire.Data[[]wire.Function]).Data
			if len(fns) != 2 {
				t.Fatalf("functions = %+v", fns)
			}
			f := fns[1]
			if f.ID != flowControlled.ID || f.NextCron == nil || f.Retries == nil || *f.Retries != 2 ||
				f.Debounce == nil || f.Debounce.MaxWait != time.Minute || f.Singleton == nil || f.FinishTimeout != time.Hour {
				t.Errorf("function = %+v", f)
			}
		}},
		{http.MethodGet, "/v1/stats", "", http.StatusOK, new(wire.Data[wire.Stats]), func(t *testing.T, v any) {
			st := v.(*wire.Data[wire.Stats]).Data
			if st.Store.Kind != "sqlite" || !st.Store.Healthy || st.QueueDepth == nil || st.Workers.Size != 2 {
				t.Errorf("stats = %+v", st)
			}
		}},
		{http.MethodPost, "/v1/runs/" + runID + "/rerun", "", http.StatusOK, new(wire.Data[wire.RunRef]), nil},
		{http.MethodDelete, "/v1/runs/" + runID, "", http.StatusOK, new(wire.Data[wire.Run]), func(t *testing.T, v any) {
			if r := v.(*wire.Data[wire.Run]).Data; r.Status != wire.StatusCancelled || !r.Finished() {
				t.Errorf("cancelled run = %+v", r)
			}
		}},
		{http.MethodPost, "/v1/functions/" + blogPost.ID + "/invoke", `{"data":{"post":8}}`, http.StatusOK, new(wire.Data[wire.Invocation]), nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			raw := fetch(t, tt.method, base+tt.path, tt.body, tt.status)
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(tt.into); err != nil {
				t.Fatalf("decode %s: %v", raw, err)
			}
			again, err := json.Marshal(tt.into)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := generic(t, raw), generic(t, again); !reflect.DeepEqual(a, b) {
				t.Errorf("round trip changed the answer:\n api: %s\nwire: %s", raw, again)
			}
			if tt.check != nil {
				tt.check(t, tt.into)
			}
		})
	}
}

func fetch(t *testing.T, method, url, body string, status int) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json") // as the client sends every write
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status {
		t.Fatalf("%s %s = %d %s, want %d", method, url, resp.StatusCode, raw, status)
	}
	return raw
}

func generic(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(fmt.Errorf("%s: %w", b, err))
	}
	return v
}

// TestAnswersThatAreNotTheDaemons: a --server pointing at another web
// server, or at a reverse proxy whose daemon is down, is told apart from
// the daemon refusing a request (which always answers JSON).
func TestAnswersThatAreNotTheDaemons(t *testing.T) {
	t.Parallel()
	status := http.StatusNotFound
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		fmt.Fprint(w, "<html><body>nginx</body></html>")
	}))
	defer srv.Close()
	c, err := client.New(client.Options{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Stats(t.Context())
	var nd *client.NotDaemonError
	if !errors.As(err, &nd) || nd.Status != http.StatusNotFound || !strings.Contains(err.Error(), "text/html") {
		t.Errorf("an HTML 404: %v, want a NotDaemonError naming it", err)
	}
	status = http.StatusBadGateway
	_, err = c.Stats(t.Context())
	var ue *client.UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "502 Bad Gateway") {
		t.Errorf("an HTML 502: %v, want an UnreachableError naming the proxy's answer", err)
	}
}
