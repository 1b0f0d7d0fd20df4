package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/daemon/daemontest"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
	"github.com/dcyfr/cyberdrew/internal/testkit"
	"github.com/dcyfr/cyberdrew/internal/wire"
)

// testConfig is a loopback daemon on a free port with its data in dir.
func testConfig(dir string) config.Serve {
	cfg := config.DefaultServe(func(string) string { return "" })
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = dir
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.Workers = 4
	return cfg
}

// eachStore runs test in parallel subtests, "sqlite" and "redis", each
// with testConfig on its store: SQLite in a temporary directory, or a
// redis-server of its own.
func eachStore(t *testing.T, test func(t *testing.T, cfg config.Serve)) {
	t.Helper()
	for _, backend := range []string{"sqlite", "redis"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t.TempDir())
			if backend == "redis" {
				cfg.Store = redistest.StartT(t, false).URL(0)
			}
			test(t, cfg)
		})
	}
}

// start runs a daemon until the test ends and returns its base URL.
func start(t *testing.T, cfg config.Serve, fns []engine.Function) string {
	t.Helper()
	return "http://" + daemontest.Run(t, cfg, nil, daemon.Options{Functions: fns}).Addr()
}

type client struct {
	t     *testing.T
	base  string
	token string
}

// do sends a request and decodes the JSON answer into out (when not nil),
// returning the status code.
func (c client) do(method, path, body string, out any) int {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if method != http.MethodGet {
		// As the clients do: a dev-mode daemon refuses a write without it.
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s %s: decoding %q: %v", method, path, raw, err)
		}
	}
	return res.StatusCode
}

// stream follows /v1/stream and delivers its changes. When the daemon
// sends "event: resync" (this reader fell behind and changes were lost) it
// does what a real client does: it reads the runs again, and delivers each
// one's current status as a run change, so a test waiting for a status does
// not wait for a change the stream dropped.
func (c client) stream(query string) <-chan store.Change {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c.t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/stream"+query, nil)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil || res.StatusCode != http.StatusOK {
		c.t.Fatalf("stream: %v %v", err, res)
	}
	out := make(chan store.Change, 1024)
	go func() {
		defer res.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var ch store.Change
			if json.Unmarshal([]byte(line), &ch) != nil {
				continue
			}
			if ch.Kind == "" { // the resync marker's data is {}
				c.resync(ctx, query, out)
				continue
			}
			out <- ch
		}
	}()
	return out
}

// resync delivers the current status of every run the stream's query
// covers as a run change. It runs on the stream's goroutine, so it reports
// failures by returning: the stream goes on, and a test that needed the
// lost change fails on its own deadline.
func (c client) resync(ctx context.Context, query string, out chan<- store.Change) {
	filter, _ := url.ParseQuery(strings.TrimPrefix(query, "?"))
	params := url.Values{"limit": {strconv.Itoa(store.MaxPageLimit)}}
	if id := filter.Get("event_id"); id != "" {
		params.Set("event_id", id)
	}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/runs?"+params.Encode(), nil)
		if err != nil {
			return
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		var page runsAnswer
		err = json.NewDecoder(res.Body).Decode(&page)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK {
			return
		}
		for _, r := range page.Data {
			out <- store.Change{Kind: store.ChangeRun, RunID: r.RunID, EventID: r.EventID, FunctionID: r.FunctionID, Status: store.Status(r.Status)}
		}
		if page.Cursor == "" {
			return
		}
		params.Set("cursor", page.Cursor)
	}
}

// awaitRun reads the stream until run id reaches a finished status.
func awaitRun(t *testing.T, changes <-chan store.Change, id string, within time.Duration) store.Status {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case c, ok := <-changes:
			if !ok {
				t.Fatalf("stream ended before run %s finished", id)
			}
			if c.Kind == store.ChangeRun && c.RunID == id && c.Status.Finished() {
				return c.Status
			}
		case <-deadline:
			t.Fatalf("run %s did not finish within %v", id, within)
		}
	}
}

// awaitRuns reads the stream until every run of ids has reached a finished
// status, in whatever order they finish, and returns their statuses.
func awaitRuns(t *testing.T, changes <-chan store.Change, ids []string, within time.Duration) map[string]store.Status {
	t.Helper()
	pending := map[string]bool{}
	for _, id := range ids {
		pending[id] = true
	}
	out := map[string]store.Status{}
	deadline := time.After(within)
	for len(pending) > 0 {
		select {
		case c, ok := <-changes:
			if !ok {
				t.Fatalf("stream ended before runs %v finished", pending)
			}
			if c.Kind == store.ChangeRun && pending[c.RunID] && c.Status.Finished() {
				delete(pending, c.RunID)
				out[c.RunID] = c.Status
			}
		case <-deadline:
			t.Fatalf("runs %v did not finish within %v", pending, within)
		}
	}
	return out
}

// runsAnswer is a /v1/runs or /v1/events/{id}/runs answer.
type runsAnswer = wire.Page[wire.Run]

func TestHelloWorldEndToEnd(t *testing.T) {
	t.Parallel()
	c := client{t: t, base: start(t, testConfig(t.TempDir()), nil)}

	var acc struct {
		IDs    []string `json:"ids"`
		Status int      `json:"status"`
	}
	sent := time.Now()
	if code := c.do("POST", "/e/anykey", `{"name":"test/hello.world","data":{"email":"a@b.c"}}`, &acc); code != 200 || acc.Status != 200 || len(acc.IDs) != 1 {
		t.Fatalf("intake answered %d %+v", code, acc)
	}
	// Subscribed after the run was created, the event filter still follows it.
	changes := c.stream("?event_id=" + acc.IDs[0])
	var runs runsAnswer
	c.do("GET", "/v1/events/"+acc.IDs[0]+"/runs", "", &runs)
	if len(runs.Data) != 1 || runs.Data[0].FunctionID != "hello-world" {
		t.Fatalf("runs of the event = %+v", runs.Data)
	}
	if st := awaitRun(t, changes, runs.Data[0].RunID, 5*time.Second); st != store.StatusCompleted {
		t.Fatalf("run ended %s", st)
	}
	took := time.Since(sent)
	c.do("GET", "/v1/events/"+acc.IDs[0]+"/runs", "", &runs)
	r := runs.Data[0]
	if r.Status != "Completed" || string(r.Output) != `{"message":"Hello a@b.c!"}` || r.RunStartedAt == nil || r.EndedAt == nil {
		t.Errorf("finished run = %+v (output %s)", r, r.Output)
	}
	if took < time.Second || took > 1500*time.Millisecond {
		t.Logf("hello-world took %v (its durable sleep is 1 s)", took)
	}

	var detail struct {
		Data struct {
			Status string `json:"status"`
			Steps  []struct {
				ID     string `json:"id"`
				Kind   string `json:"kind"`
				Status string `json:"status"`
			} `json:"steps"`
		} `json:"data"`
	}
	c.do("GET", "/v1/runs/"+r.RunID, "", &detail)
	if len(detail.Data.Steps) != 1 || detail.Data.Steps[0].ID != "wait-a-moment" || detail.Data.Steps[0].Kind != "sleep" || detail.Data.Steps[0].Status != "Completed" {
		t.Errorf("run detail steps = %+v", detail.Data.Steps)
	}
}

func TestIntakeRejectsWholeRequestsAndDeduplicates(t *testing.T) {
	t.Parallel()
	c := client{t: t, base: start(t, testConfig(t.TempDir()), nil)}
	var bad struct {
		Error string `json:"error"`
	}
	code := c.do("POST", "/e/k", `[{"name":"test/hello.world","data":{"email":"a@b.c"}},{"name":"test/hello.world","data":{"email":7}}]`, &bad)
	if code != 400 || !strings.Contains(bad.Error, "data.email") {
		t.Fatalf("schema violation answered %d %q, want 400 naming data.email", code, bad.Error)
	}
	var events struct {
		Data []json.RawMessage `json:"data"`
	}
	c.do("GET", "/v1/events", "", &events)
	if len(events.Data) != 0 {
		t.Fatalf("a rejected request stored %d events", len(events.Data))
	}

	var first, second struct {
		IDs []string `json:"ids"`
	}
	body := `{"id":"order-42","name":"shop/order.paid","data":{"n":1}}`
	c.do("POST", "/e/k", body, &first)
	c.do("POST", "/e/k", body, &second)
	if len(first.IDs) != 1 || len(second.IDs) != 1 || first.IDs[0] != second.IDs[0] {
		t.Fatalf("client id dedup: first %v, second %v", first.IDs, second.IDs)
	}
	c.do("GET", "/v1/events", "", &events)
	if len(events.Data) != 1 {
		t.Errorf("%d events stored for one client id, want 1", len(events.Data))
	}
}

func TestAdminAPIOnTheRealEngine(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	fns := []engine.Function{{
		ID: "held", Triggers: []engine.Trigger{{Event: "test/held"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			return engine.Step(ctx, r, "wait", func(ctx context.Context) (string, error) {
				select {
				case <-release:
				case <-ctx.Done():
					return "", ctx.Err()
				}
				return "done", nil
			})
		},
	}, {
		ID: "echo", Triggers: []engine.Trigger{{Event: "test/echo"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) { return r.Event.Data, nil },
	}}
	cfg := testConfig(t.TempDir())
	cfg.EventKeys = []string{"ek"}
	cfg.SigningKey, cfg.SigningKeyFallback = "sk-new", "sk-old"
	base := start(t, cfg, fns)
	anon := client{t: t, base: base}
	c := client{t: t, base: base, token: "sk-new"}

	if code := anon.do("GET", "/v1/runs", "", nil); code != 401 {
		t.Errorf("admin without bearer: %d, want 401", code)
	}
	if code := anon.do("POST", "/e/wrong", `{"name":"test/echo"}`, nil); code != 401 {
		t.Errorf("intake with a wrong key: %d, want 401", code)
	}
	if code := (client{t: t, base: base, token: "sk-old"}).do("GET", "/v1/functions", "", nil); code != 200 {
		t.Errorf("fallback signing key: %d, want 200", code)
	}
	changes := c.stream("")

	var inv struct {
		Data struct {
			EventID string   `json:"event_id"`
			RunIDs  []string `json:"run_ids"`
		} `json:"data"`
	}
	if code := c.do("POST", "/v1/functions/echo/invoke", `{"data":{"x":1}}`, &inv); code != 200 || len(inv.Data.RunIDs) != 1 {
		t.Fatalf("invoke: %d %+v", code, inv)
	}
	awaitRun(t, changes, inv.Data.RunIDs[0], 5*time.Second)
	var one struct {
		Data struct {
			Output json.RawMessage `json:"output"`
		} `json:"data"`
	}
	c.do("GET", "/v1/runs/"+inv.Data.RunIDs[0], "", &one)
	if string(one.Data.Output) != `{"x":1}` {
		t.Errorf("invoked run output %s", one.Data.Output)
	}
	if code := c.do("POST", "/v1/functions/nope/invoke", ``, nil); code != 404 {
		t.Errorf("invoke unknown: %d, want 404", code)
	}

	var rerun struct {
		Data struct {
			RunID string `json:"run_id"`
		} `json:"data"`
	}
	if code := c.do("POST", "/v1/runs/"+inv.Data.RunIDs[0]+"/rerun", "", &rerun); code != 200 || rerun.Data.RunID == "" || rerun.Data.RunID == inv.Data.RunIDs[0] {
		t.Fatalf("rerun: %d %+v", code, rerun)
	}
	awaitRun(t, changes, rerun.Data.RunID, 5*time.Second)

	var acc struct {
		IDs []string `json:"ids"`
	}
	c.do("POST", "/e/ek", `{"name":"test/held"}`, &acc)
	var runs runsAnswer
	c.do("GET", "/v1/events/"+acc.IDs[0]+"/runs", "", &runs)
	held := runs.Data[0].RunID
	if code := c.do("DELETE", "/v1/runs/"+held, "", nil); code != 200 {
		t.Fatalf("cancel: %d", code)
	}
	if st := awaitRun(t, changes, held, 5*time.Second); st != store.StatusCancelled {
		t.Errorf("cancelled run ended %s", st)
	}
	if code := c.do("DELETE", "/v1/runs/"+held, "", nil); code != 409 {
		t.Errorf("second cancel: %d, want 409", code)
	}

	var list struct {
		Data []struct {
			RunID  string `json:"run_id"`
			Status string `json:"status"`
		} `json:"data"`
		Cursor string `json:"cursor"`
	}
	c.do("GET", "/v1/runs?function=echo&limit=1", "", &list)
	if len(list.Data) != 1 || list.Cursor == "" {
		t.Fatalf("first page = %+v", list)
	}
	newest := list.Data[0]
	c.do("GET", "/v1/runs?function=echo&limit=1&cursor="+list.Cursor, "", &list)
	if len(list.Data) != 1 || list.Data[0].RunID == newest.RunID {
		t.Errorf("second page = %+v after %+v", list.Data, newest)
	}
	c.do("GET", "/v1/runs?status=Cancelled", "", &list)
	if len(list.Data) != 1 || list.Data[0].Status != "Cancelled" {
		t.Errorf("status filter = %+v", list.Data)
	}

	var fns2 struct {
		Data []struct {
			ID    string `json:"id"`
			Stats struct {
				RunsLastHour int `json:"runs_last_hour"`
			} `json:"stats"`
		} `json:"data"`
	}
	c.do("GET", "/v1/functions", "", &fns2)
	if len(fns2.Data) != 2 || fns2.Data[1].ID != "echo" || fns2.Data[1].Stats.RunsLastHour != 2 {
		t.Errorf("functions = %+v", fns2.Data)
	}
}

func TestReadyAndHealth(t *testing.T) {
	t.Parallel()
	c := client{t: t, base: start(t, testConfig(t.TempDir()), nil)}
	for _, path := range []string{"/health", "/healthz", "/readyz"} {
		var body map[string]any
		if code := c.do("GET", path, "", &body); code != 200 {
			t.Errorf("%s: %d %v", path, code, body)
		}
	}
	var missing map[string]string
	if code := c.do("GET", "/nope", "", &missing); code != 404 || missing["error"] == "" {
		t.Errorf("unknown route: %d %v", code, missing)
	}
}

func TestServeRefusesPublicAddressWithoutKeys(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	cfg.Addr = "0.0.0.0:0"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "INNGEST_EVENT_KEY") || !strings.Contains(err.Error(), "INNGEST_SIGNING_KEY") {
		t.Fatalf("Validate() = %v, want both missing keys named", err)
	}
}

func TestStopEndsOpenStreams(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, err := daemon.New(ctx, testConfig(t.TempDir()), slog.New(slog.DiscardHandler), daemon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	changes := client{t: t, base: "http://" + d.Addr()}.stream("")
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := d.Stop(stopCtx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	select {
	case _, open := <-changes:
		if open {
			t.Fatal("the stream is still delivering after Stop")
		}
	case <-stopCtx.Done():
		t.Fatal("the stream outlived the daemon")
	}
}

func TestRetriedRequestWithTheSameSeedStoresNothingTwice(t *testing.T) {
	t.Parallel()
	c := client{t: t, base: start(t, testConfig(t.TempDir()), nil)}
	body := `[{"name":"test/hello.world","data":{"email":"a@b.c"}},{"name":"test/other"}]`
	send := func(seed string) []string {
		req, _ := http.NewRequest("POST", c.base+"/e/k", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Inngest-Event-Id-Seed", seed)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var acc struct {
			IDs []string `json:"ids"`
		}
		if err := json.NewDecoder(res.Body).Decode(&acc); err != nil || res.StatusCode != 200 || len(acc.IDs) != 2 {
			t.Fatalf("intake: %d %v %v", res.StatusCode, acc, err)
		}
		return acc.IDs
	}
	first := send("1767225600000,AAECAwQFBgcICQ==")
	retry := send("1767225600000,AAECAwQFBgcICQ==")
	if strings.Join(first, ",") != strings.Join(retry, ",") {
		t.Fatalf("retry answered %v, want the first attempt's %v", retry, first)
	}
	other := send("1767225600001,AAECAwQFBgcICQ==")
	if other[0] == first[0] {
		t.Fatalf("another seed answered the same ids %v", other)
	}
	var events struct {
		Data []json.RawMessage `json:"data"`
	}
	c.do("GET", "/v1/events", "", &events)
	if len(events.Data) != 4 {
		t.Errorf("%d events stored, want 4 (two requests of two)", len(events.Data))
	}
	var runs runsAnswer
	c.do("GET", "/v1/events/"+first[0]+"/runs", "", &runs)
	if len(runs.Data) != 1 {
		t.Errorf("the retried event has %d runs, want 1", len(runs.Data))
	}
}

// TestEventsAfterYear9999AreRefused: an event dated after 9999-12-31 (its
// ts, or the time of a seeded id) would give its run an available-at time
// that JSON cannot write, and every listing holding that run answered 500
// until the run was cancelled. The event API refuses such a ts with a 400
// naming it, the latest valid ts is taken, and the listings still answer:
// on SQLite and on Redis.
func TestEventsAfterYear9999AreRefused(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, cfg config.Serve) {
		c := client{t: t, base: start(t, cfg, nil)}
		var bad struct {
			Error string `json:"error"`
		}
		code := c.do("POST", "/e/k", `{"name":"test/hello.world","data":{"email":"a@b.c"},"ts":253402300800000}`, &bad)
		if code != 400 || !strings.Contains(bad.Error, "ts: must be no later than 253402300799999") {
			t.Fatalf("a ts in year 10000 answered %d %q, want 400 naming ts", code, bad.Error)
		}
		var acc struct {
			IDs []string `json:"ids"`
		}
		if code := c.do("POST", "/e/k", `{"name":"test/hello.world","data":{"email":"a@b.c"},"ts":253402300799999}`, &acc); code != 200 || len(acc.IDs) != 1 {
			t.Fatalf("the latest valid ts answered %d %+v", code, acc)
		}
		var runs runsAnswer
		if code := c.do("GET", "/v1/runs", "", &runs); code != 200 || len(runs.Data) != 1 {
			t.Fatalf("GET /v1/runs answered %d with %d runs, want 200 with the run due in 9999", code, len(runs.Data))
		}
		if code := c.do("GET", "/v1/events/"+acc.IDs[0]+"/runs", "", &runs); code != 200 {
			t.Fatalf("GET the event's runs answered %d", code)
		}
	})
}

// TestMalformedCursorSaysSo: a listing with a cursor it never gave answers
// 400 "malformed cursor", not the store's own layers ("sqlite: list runs:
// invalid request: …").
func TestMalformedCursorSaysSo(t *testing.T) {
	t.Parallel()
	eachStore(t, func(t *testing.T, cfg config.Serve) {
		c := client{t: t, base: start(t, cfg, nil)}
		for _, path := range []string{"/v1/runs?cursor=garbage", "/v1/events?cursor=garbage"} {
			var bad struct {
				Error string `json:"error"`
			}
			if code := c.do("GET", path, "", &bad); code != 400 || bad.Error != "malformed cursor" {
				t.Errorf("GET %s = %d %q, want 400 %q", path, code, bad.Error, "malformed cursor")
			}
		}
	})
}

// TestStopWhileStarting: a SIGTERM that arrives while the daemon is still
// opening a Redis that does not answer (a black hole: it accepts and never
// replies) ends serve without serving first, where it used to start, log
// "serving" and then wait out the store's timeouts to stop.
func TestStopWhileStarting(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	cfg.Store = "redis://" + testkit.BlackHole(t) + "/0"
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(300*time.Millisecond, cancel) // the signal, mid-open
	var logs testkit.SyncBuffer
	err := daemon.Serve(ctx, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("Serve = %v, want nil", err)
	}
	if out := logs.String(); strings.Contains(out, "cyberdrew serving") || !strings.Contains(out, "stopped before serving") {
		t.Errorf("logs:\n%s\nwant no serving, and stopped before serving", out)
	}
}

// TestServesWhileItsStoreIsSilent: a daemon whose Redis takes connections
// and never answers still starts serving (its readiness says the store is
// down) instead of holding its start for the client's retries: each first
// call is bounded, and the cron catch-up, which needs the store, goes on
// in the background.
func TestServesWhileItsStoreIsSilent(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	cfg.Store = "redis://" + testkit.BlackHole(t) + "/0"
	var logs testkit.SyncBuffer
	d, err := daemon.New(t.Context(), cfg, slog.New(slog.NewTextHandler(&logs, nil)), daemon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d.Stop(ctx)
	}()
	if out := logs.String(); !strings.Contains(out, "catching up missed cron ticks in the background") || !strings.Contains(out, "cyberdrew serving") {
		t.Errorf("logs:\n%s\nwant the cron catch-up left to the background, and serving", out)
	}
	res, err := http.Get("http://" + d.Addr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d, want 503 while the store does not answer", res.StatusCode)
	}
}
