package daemon_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/cli"
	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/testkit"
)

// canary is planted in every secret; no log line nor answer may hold it.
const canary = "CANARY9f8e7d6c"

// echoAPI is a third-party API that refuses every call and, like a careless
// one, repeats the credential it was given in its error.
func echoAPI(t *testing.T, hit chan<- struct{}) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(map[string]string{
			"message": "invalid credential " + r.Header.Get("Authorization"), "name": "validation_error",
		})
		select {
		case hit <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestSecretsNeverShow(t *testing.T) {
	t.Parallel()
	hits := make(chan struct{}, 16)
	resend, github := echoAPI(t, hits), echoAPI(t, hits)
	env := map[string]string{
		"INNGEST_SIGNING_KEY":          "sk-" + canary,
		"INNGEST_SIGNING_KEY_FALLBACK": "old-" + canary,
		"INNGEST_EVENT_KEY":            "ek-" + canary,
		"RESEND_API_KEY":               "re_" + canary,
		"GITHUB_TOKEN":                 "ghp_" + canary,
		"CYBERDREW_MILESTONE_WEBHOOK":  "https://hooks.example/" + canary,
		"CYBERDREW_RESEND_BASE_URL":    resend.URL,
		"CYBERDREW_GITHUB_API_URL":     github.URL,
		"CYBERDREW_CONTACT_TO":         "owner@example.com",
		"CYBERDREW_GITHUB_USER":        "octocat",
		"CYBERDREW_TRUSTED_PROXIES":    "127.0.0.1",
	}
	var answers strings.Builder
	base, logs, stop := serveCLI(t, env)
	call := func(method, path, token, body string) int {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		answers.WriteString(res.Status + "\n")
		for k, v := range res.Header {
			answers.WriteString(k + ": " + strings.Join(v, ",") + "\n")
		}
		answers.Write(raw)
		return res.StatusCode
	}
	admin := "sk-" + canary
	changes := (client{t: t, base: base, token: admin}).stream("")

	// Errors of every kind: bad keys, bad bodies, and site jobs whose
	// third-party calls fail with the credential echoed back.
	call("GET", "/v1/runs", "sk-wrong", "")
	call("POST", "/e/wrong", "", `{"name":"test/x"}`)
	call("POST", "/e/ek-"+canary, "", `{"name":"test/x","data":`)
	call("GET", "/metrics", "", "")
	call("POST", "/api/contact", "", `{"name":"Eve Example","email":"eve@example.com","message":"hello there, this is a test"}`)
	call("GET", "/api/github-contributions?username=octocat", "", "")
	for range 2 {
		select {
		case <-hits:
		case <-time.After(10 * time.Second):
			t.Fatalf("the site jobs did not call the third-party APIs; logs:\n%s", logs.String())
		}
	}
	// Wait until both failed calls are recorded: a run is handed back to
	// the queue (retry) or ends.
	recorded := 0
	deadline := time.After(10 * time.Second)
	for recorded < 2 {
		select {
		case c := <-changes:
			if c.StepID != "" && (c.Status == store.StatusRunning || c.Status == store.StatusFailed) {
				recorded++
			}
		case <-deadline:
			t.Fatalf("the failed calls were not recorded")
		}
	}
	call("GET", "/v1/runs?limit=100", admin, "")
	var list struct {
		Data []struct {
			RunID string `json:"run_id"`
		} `json:"data"`
	}
	req, _ := http.NewRequest("GET", base+"/v1/runs?limit=100", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	if res, err := http.DefaultClient.Do(req); err == nil {
		json.NewDecoder(res.Body).Decode(&list)
		res.Body.Close()
	}
	for _, r := range list.Data {
		call("GET", "/v1/runs/"+r.RunID, admin, "")
	}
	call("GET", "/v1/events?limit=100", admin, "")
	call("GET", "/v1/functions", admin, "")
	call("GET", "/metrics", admin, "")
	stop()

	for i, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, canary) {
			t.Errorf("log line %d holds a secret: %s", i, line)
		}
	}
	for i, line := range strings.Split(answers.String(), "\n") {
		if strings.Contains(line, canary) {
			t.Errorf("answer line %d holds a secret: %.300s", i, line)
		}
	}
	if !strings.Contains(answers.String(), "invalid credential Bearer [redacted]") {
		t.Errorf("the third-party errors did not reach the answers, so the test proves nothing:\n%s", answers.String())
	}
}

// A Redis password in the store URL shows neither in the logs of a daemon
// that cannot reach Redis nor in its answers.
func TestRedisPasswordNeverShows(t *testing.T) {
	t.Parallel()
	env := map[string]string{"REDIS_URL": "redis://:pw-" + canary + "@127.0.0.1:1/0"}
	base, logs, stop := serveCLI(t, env)
	var answers strings.Builder
	for _, path := range []string{"/readyz", "/v1/runs", "/e/k"} {
		method := "GET"
		if path == "/e/k" {
			method = "POST"
		}
		req, _ := http.NewRequest(method, base+path, strings.NewReader(`{"name":"test/x"}`))
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s %s with Redis down: %d, want 503", method, path, res.StatusCode)
		}
		answers.Write(raw)
	}
	stop()
	if !strings.Contains(logs.String(), "127.0.0.1:1") {
		t.Errorf("the logs do not mention the unreachable Redis, so the test proves nothing")
	}
	for _, text := range []string{logs.String(), answers.String()} {
		for _, line := range strings.Split(text, "\n") {
			if strings.Contains(line, canary) {
				t.Errorf("secret shown: %s", line)
			}
		}
	}
}

// serveCLI runs `cyberdrew serve` through the CLI, in process, with env as
// its environment and debug logs in JSON captured; stop ends it and waits.
func serveCLI(t *testing.T, env map[string]string) (base string, logs *testkit.SyncBuffer, stop func()) {
	t.Helper()
	logs = &testkit.SyncBuffer{}
	addr := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan cli.ExitCode, 1)
	go func() {
		done <- cli.Run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-format", "json", "--log-level", "debug"},
			io.Discard, logs, cli.Options{
				Getenv: func(k string) string { return env[k] },
				Serve: func(ctx context.Context, cfg config.Serve, logger *slog.Logger) error {
					d, err := daemon.New(ctx, cfg, logger, daemon.Options{})
					if err != nil {
						return err
					}
					if err := d.Start(ctx); err != nil {
						return err
					}
					addr <- d.Addr()
					<-ctx.Done()
					return d.Stop(context.Background())
				},
			})
	}()
	select {
	case a := <-addr:
		base = "http://" + a
	case code := <-done:
		cancel()
		t.Fatalf("serve exited %d: %s", code, logs.String())
	}
	return base, logs, func() { cancel(); <-done }
}
