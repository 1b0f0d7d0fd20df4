package daemon_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// stepFunction has one step that succeeds and one that fails for good.
func stepFunction() engine.Function {
	return engine.Function{
		ID: "stepper", Triggers: []engine.Trigger{{Event: "test/step"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			if _, err := engine.Step(ctx, r, "ok", func(context.Context) (int, error) { return 1, nil }); err != nil {
				return nil, err
			}
			return engine.Step(ctx, r, "boom", func(context.Context) (int, error) {
				return 0, engine.NonRetriable(errBoom)
			})
		},
	}
}

type boomError struct{}

func (boomError) Error() string { return "boom" }

var errBoom = boomError{}

// scrape reads /metrics with token (none when empty).
func scrape(t *testing.T, base, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

func TestMetricsAfterARun(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	cfg.SigningKey = "sk-metrics"
	limited := engine.Function{
		ID: "limited", Triggers: []engine.Trigger{{Event: "test/limited"}}, Idempotency: "event.data.id",
		RateLimit: &engine.RateLimit{Limit: 1, Period: time.Minute},
		Handler:   func(context.Context, *engine.Run) (any, error) { return nil, nil },
	}
	base := start(t, cfg, []engine.Function{stepFunction(), limited})
	c := client{t: t, base: base, token: cfg.SigningKey}

	if code, body := scrape(t, base, ""); code != http.StatusUnauthorized || !strings.Contains(body, `"error"`) {
		t.Fatalf("scrape without the key = %d %q, want 401 with a JSON error", code, body)
	}
	if code, _ := scrape(t, base, "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("scrape with a wrong key = %d, want 401", code)
	}
	// Before anything happened, the series an alert watches exist at 0.
	_, first := scrape(t, base, cfg.SigningKey)
	for _, series := range []string{
		`cyberdrew_runs_finished_total{function="stepper",status="Failed"} 0`,
		`cyberdrew_runs_started_total{function="stepper"} 0`,
		`cyberdrew_events_rejected_total{reason="invalid"} 0`,
		`cyberdrew_email_delivery_total{email="notification",status="bounced"} 0`,
		`cyberdrew_runs_skipped_total{function="limited",reason="idempotency"} 0`,
		`cyberdrew_runs_skipped_total{function="limited",reason="rate_limit"} 0`,
	} {
		if !strings.Contains(first, series) {
			t.Errorf("the first scrape lacks %s", series)
		}
	}
	// Only the reasons a function's flow control can give.
	for _, series := range []string{`cyberdrew_runs_skipped_total{function="stepper"`, `function="limited",reason="singleton"`} {
		if strings.Contains(first, series) {
			t.Errorf("the first scrape has %s", series)
		}
	}
	changes := c.stream("")
	var acc struct {
		IDs []string `json:"ids"`
	}
	if code := c.do("POST", "/e/k", `{"name":"test/step"}`, &acc); code != 200 {
		t.Fatalf("intake: %d", code)
	}
	c.do("POST", "/e/k", `{"data":{}}`, nil)
	var runs runsAnswer
	c.do("GET", "/v1/events/"+acc.IDs[0]+"/runs", "", &runs)
	if len(runs.Data) != 1 {
		t.Fatalf("runs = %+v", runs.Data)
	}
	if st := awaitRun(t, changes, runs.Data[0].RunID, 5*time.Second); st != store.StatusFailed {
		t.Fatalf("run ended %s, want Failed", st)
	}

	wants := []string{
		`cyberdrew_events_accepted_total 1`,
		`cyberdrew_events_rejected_total{reason="invalid"} 1`,
		`cyberdrew_runs_started_total{function="stepper"} 1`,
		`cyberdrew_runs_finished_total{function="stepper",status="Failed"} 1`,
		`cyberdrew_step_duration_seconds_count{function="stepper",outcome="completed"} 1`,
		`cyberdrew_step_duration_seconds_count{function="stepper",outcome="failed"} 1`,
		`cyberdrew_event_to_start_seconds_count 1`,
		`cyberdrew_queue_depth 0`,
		`cyberdrew_leases_lost_total 0`,
		`cyberdrew_lease_takeovers_total 0`,
		`cyberdrew_http_requests_total{code="200",route="POST /e/{eventKey}"} 1`,
		`cyberdrew_http_requests_total{code="400",route="POST /e/{eventKey}"} 1`,
		`cyberdrew_http_requests_total{code="401",route="GET /metrics"} 2`,
		`go_goroutines `,
	}
	// The worker counts a finished run once the store has it, just after
	// the change that announced it: scrape until the counters caught up.
	var body string
	for deadline := time.Now().Add(5 * time.Second); ; {
		var code int
		code, body = scrape(t, base, cfg.SigningKey)
		if code != http.StatusOK {
			t.Fatalf("scrape = %d", code)
		}
		if strings.Contains(body, wants[3]) || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range wants {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

func TestMetricsPublic(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	cfg.SigningKey = "sk-metrics"
	cfg.MetricsPublic = true
	base := start(t, cfg, []engine.Function{stepFunction()})
	if code, body := scrape(t, base, ""); code != http.StatusOK || !strings.Contains(body, "cyberdrew_queue_depth") {
		t.Fatalf("public scrape = %d", code)
	}
	if code := (client{t: t, base: base}).do("GET", "/v1/runs", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("admin API without the key = %d, want 401", code)
	}
}

// TestMetricsCountAClientThatLeftAs499: visitors who close the tab while
// the analytics page waits for a slow store (Redis frozen here) are counted
// as code 499, as nginx counts them, not as the daemon's 500 (an alert on
// 5xx fired for them), nor as answered.
func TestMetricsCountAClientThatLeftAs499(t *testing.T) {
	t.Parallel()
	srv, _, base := redisDaemon(t)
	thaw := freeze(t, srv)
	const visitors = 3
	for range visitors {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/analytics", nil)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
			t.Errorf("GET /analytics was answered %d by a frozen store within 100 ms", res.StatusCode)
		}
		cancel()
	}
	thaw()
	want := fmt.Sprintf(`cyberdrew_http_requests_total{code="499",route="GET /analytics"} %d`, visitors)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := scrape(t, base, "")
		if strings.Contains(body, want) {
			if strings.Contains(body, `code="500",route="GET /analytics"`) {
				t.Errorf("a client that left was counted as a 500:\n%s", grepLines(body, "GET /analytics"))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in /metrics:\n%s", want, grepLines(body, "GET /analytics"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
