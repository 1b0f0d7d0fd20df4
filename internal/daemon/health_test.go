package daemon_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// awaitReady fails t unless /readyz answers 200 within 15 s of what made
// the store well again.
func awaitReady(t *testing.T, base, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if code, _, _ := probe(t, "GET", base+"/readyz", ""); code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not recover within 15 s of %s", what)
		}
		time.Sleep(50 * time.Millisecond) // a guard between probes
	}
}

// probe sends one request and returns its status, body and how long the
// answer took.
func probe(t *testing.T, method, url, body string) (int, string, time.Duration) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json") // as every event client sends
	}
	began := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(raw), time.Since(began)
}

// slack is what a bounded answer may take beyond its timeout on a loaded
// machine: the assertions say "did not hang", not how fast.
const slack = 3 * time.Second

// redisDaemon runs a daemon on a redis-server of its own, with an intake
// timeout of 1 s, and returns the server, the daemon's configuration and
// its base URL.
func redisDaemon(t *testing.T) (*redistest.Server, config.Serve, string) {
	t.Helper()
	srv := redistest.StartT(t, false)
	cfg := testConfig(t.TempDir())
	cfg.Store = srv.URL(0)
	cfg.IntakeTimeout = time.Second
	return srv, cfg, start(t, cfg, nil)
}

// freeze stops srv (SIGSTOP) and returns what lets it go on (SIGCONT);
// the server goes on when the test ends if the test has not let it.
func freeze(t *testing.T, srv *redistest.Server) (thaw func()) {
	t.Helper()
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			srv.Thaw()
		}
	})
	return func() {
		t.Helper()
		if err := srv.Thaw(); err != nil {
			t.Fatal(err)
		}
		thawed = true
	}
}

// TestFrozenRedisFailsReadinessAndIntakeInTime freezes the daemon's Redis
// (SIGSTOP): /readyz answers 503 within its timeout and intake 503 within
// its bound, saying a resend with the same id is safe; after SIGCONT both
// recover by themselves.
func TestFrozenRedisFailsReadinessAndIntakeInTime(t *testing.T) {
	t.Parallel()
	srv, cfg, base := redisDaemon(t)
	const event = `{"name":"test/hello.world","id":"frozen-1","data":{"email":"a@b.c"}}`
	if code, body, _ := probe(t, "POST", base+"/e/anykey", event); code != http.StatusOK {
		t.Fatalf("intake before the freeze = %d %s", code, body)
	}

	thaw := freeze(t, srv)
	code, body, took := probe(t, "GET", base+"/readyz", "")
	if code != http.StatusServiceUnavailable || took > 2*time.Second+slack {
		t.Errorf("/readyz with Redis frozen = %d %s after %v, want 503 within its 2 s timeout", code, body, took)
	}
	code, body, took = probe(t, "POST", base+"/e/anykey", `{"name":"test/hello.world","id":"frozen-2","data":{"email":"a@b.c"}}`)
	if code != http.StatusServiceUnavailable || took > cfg.IntakeTimeout+slack {
		t.Errorf("intake with Redis frozen = %d %s after %v, want 503 within %v", code, body, took, cfg.IntakeTimeout)
	}
	var answer struct{ Stored, Retry string }
	if err := json.Unmarshal([]byte(body), &answer); err != nil || answer.Stored != "unknown" || !strings.Contains(answer.Retry, "same id") {
		t.Errorf("intake's 503 = %s, want stored unknown and a retry with the same id", body)
	}

	thaw()
	awaitReady(t, base, "the thaw")
	if code, body, _ := probe(t, "POST", base+"/e/anykey", `{"name":"test/hello.world","id":"frozen-2","data":{"email":"a@b.c"}}`); code != http.StatusOK {
		t.Errorf("the resend after the thaw = %d %s", code, body)
	}
}

// TestFrozenRedisFailsTheSiteRoutesInTime: with Redis stuck (SIGSTOP, as a
// hung server or a partition), the site's own routes answer 503 with
// Retry-After within the store timeout, as the event API does, where they
// held a visitor's request for 11 to 30 s (the contact form, the view
// counts, the analytics page); and they answer again after the thaw.
func TestFrozenRedisFailsTheSiteRoutesInTime(t *testing.T) {
	t.Parallel()
	srv, cfg, base := redisDaemon(t)
	const contact = `{"name":"Ada","email":"ada@example.com","message":"Hello there, a frozen store."}`
	routes := []struct{ method, path, body string }{
		{"POST", "/api/contact", contact},
		{"GET", "/api/views/a-post", ""},
		{"GET", "/api/analytics", ""},
		{"GET", "/analytics", ""},
	}
	for _, r := range routes {
		if code, body, _ := probe(t, r.method, base+r.path, r.body); code != http.StatusOK {
			t.Fatalf("%s %s before the freeze = %d %s", r.method, r.path, code, body)
		}
	}
	thaw := freeze(t, srv)
	for _, r := range routes {
		code, body, took := probe(t, r.method, base+r.path, r.body)
		if code != http.StatusServiceUnavailable || took > cfg.IntakeTimeout+slack {
			t.Errorf("%s %s with Redis frozen = %d %s after %v, want 503 within %v", r.method, r.path, code, body, took, cfg.IntakeTimeout)
		}
	}
	thaw()
	awaitReady(t, base, "the thaw")
	if code, body, _ := probe(t, "GET", base+"/api/views/a-post", ""); code != http.StatusOK {
		t.Errorf("the views after the thaw = %d %s", code, body)
	}
}
