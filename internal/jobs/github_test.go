package jobs_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// fakeGitHub stands in for api.github.com/graphql.
type fakeGitHub struct {
	mu       sync.Mutex
	requests []ghRequest
	answer   func(n int, w http.ResponseWriter) bool // true: answered
}

type ghRequest struct {
	Auth      string
	Query     string
	Variables map[string]any
}

const calendar = `{"data":{"user":{"contributionsCollection":{"contributionCalendar":{"totalContributions":5,"weeks":[{"contributionDays":[{"date":"2025-03-10","contributionCount":2},{"date":"2025-03-11","contributionCount":3}]}]}}}}}`

func (f *fakeGitHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req ghRequest
	body, _ := io.ReadAll(r.Body)
	json.Unmarshal(body, &req)
	req.Auth = r.Header.Get("Authorization")
	f.mu.Lock()
	n := len(f.requests)
	f.requests = append(f.requests, req)
	f.mu.Unlock()
	if f.answer != nil && f.answer(n, w) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, calendar)
}

func (f *fakeGitHub) all() []ghRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ghRequest(nil), f.requests...)
}

func withGitHub(t *testing.T, f *fakeGitHub) func(store.Store, *clockwork.FakeClock, *jobs.Deps) {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return func(_ store.Store, clock *clockwork.FakeClock, d *jobs.Deps) {
		d.GitHub = jobs.NewGitHubClient("ghp_secret", srv.URL+"/graphql", nil, clock)
	}
}

// refresh sends a manual refresh and lets its debounce period pass.
func (b *bundle) refresh(t *testing.T, data string) string {
	t.Helper()
	id := b.send(t, jobs.EventGitHubRefresh, data, "manual-refresh-github-data")
	b.clock.Advance(5 * time.Second)
	return id
}

func TestManualRefreshQueriesGitHubAndCaches(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		f := &fakeGitHub{}
		b := setup(t, be, withGitHub(t, f))
		id := b.refresh(t, `{"manual":true,"force":true}`)
		b.waitStatus(t, id, store.StatusCompleted)
		reqs := f.all()
		if len(reqs) != 1 {
			t.Fatalf("%d requests", len(reqs))
		}
		q := reqs[0]
		if q.Auth != "Bearer ghp_secret" {
			t.Errorf("authorization %q", q.Auth)
		}
		for _, part := range []string{"user(login: $login)", "contributionsCollection", "contributionCalendar", "totalContributions", "weeks", "contributionDays", "date", "contributionCount"} {
			if !strings.Contains(q.Query, part) {
				t.Errorf("query %q lacks %q", q.Query, part)
			}
		}
		if q.Variables["login"] != "dcyfr" {
			t.Errorf("variables %v", q.Variables)
		}
		if _, ok := b.steps(t, id)["check-cache"]; ok {
			t.Errorf("force ran check-cache")
		}
		var c jobs.Contributions
		if err := json.Unmarshal([]byte(b.get(t, "github:contributions:dcyfr")), &c); err != nil {
			t.Fatal(err)
		}
		want := jobs.Contributions{
			Contributions: []jobs.ContributionDay{{Date: "2025-03-10", Count: 2}, {Date: "2025-03-11", Count: 3}},
			Source:        "github-api", TotalContributions: 5, LastUpdated: "2025-03-12T10:30:05Z",
		}
		if c.Source != want.Source || c.TotalContributions != 5 || c.LastUpdated != want.LastUpdated || len(c.Contributions) != 2 || c.Contributions[1] != want.Contributions[1] {
			t.Errorf("cache %+v", c)
		}
		if ttl, _ := b.st.TTL(b.ctx, "github:contributions:dcyfr"); ttl < time.Hour {
			t.Errorf("cache ttl %v does not outlive failed refreshes", ttl)
		}

		// A second refresh within five minutes finds the cache fresh.
		id = b.refresh(t, `{"manual":true}`)
		r := b.waitStatus(t, id, store.StatusCompleted)
		if !strings.Contains(string(r.Output), `"skipped":true`) || len(f.all()) != 1 {
			t.Errorf("fresh cache refetched: %s", r.Output)
		}
	})
}

func TestRefreshBurstIsDebounced(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, withGitHub(t, &fakeGitHub{}))
		first := b.send(t, jobs.EventGitHubRefresh, `{}`, "manual-refresh-github-data")
		second := b.send(t, jobs.EventGitHubRefresh, `{}`, "manual-refresh-github-data")
		if first != second {
			t.Fatalf("a burst made two runs: %s %s", first, second)
		}
		b.clock.Advance(5 * time.Second)
		b.waitStatus(t, first, store.StatusCompleted)
	})
}

func TestGitHubUnauthorizedFailsAtOnce(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		f := &fakeGitHub{answer: func(_ int, w http.ResponseWriter) bool {
			http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
			return true
		}}
		b := setup(t, be, withGitHub(t, f))
		id := b.refresh(t, `{"force":true}`)
		r := b.waitStatus(t, id, store.StatusFailed)
		if s := b.steps(t, id)["fetch-github-data"]; len(s.Attempts) != 1 {
			t.Errorf("%d attempts, want 1", len(s.Attempts))
		}
		if !strings.Contains(r.Error, "401") {
			t.Errorf("error %q", r.Error)
		}
	})
}

func TestGitHubRateLimitRetriesAtReset(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		reset := start.Add(10 * time.Minute)
		f := &fakeGitHub{answer: func(n int, w http.ResponseWriter) bool {
			if n > 0 {
				return false
			}
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
			http.Error(w, `{"message":"API rate limit exceeded"}`, http.StatusForbidden)
			return true
		}}
		b := setup(t, be, withGitHub(t, f))
		id := b.refresh(t, `{"force":true}`)
		var s store.Step
		b.waitFor(t, "the rate-limited attempt", func() bool {
			s = b.steps(t, id)["fetch-github-data"]
			return len(s.Attempts) == 1 && !s.WakeAt.IsZero()
		})
		if !s.WakeAt.Equal(reset) {
			t.Fatalf("retry at %v, want the reset %v", s.WakeAt, reset)
		}
		b.clock.Advance(reset.Sub(b.clock.Now()))
		b.waitStatus(t, id, store.StatusCompleted)
	})
}

func TestWithoutTokenCronIsDisabledAndManualRefreshFails(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, nil)
		for _, fn := range b.eng.Functions() {
			if fn.ID == "refresh-github-data" && !strings.Contains(fn.Disabled, "GITHUB_TOKEN") {
				t.Errorf("cron refresh not disabled: %q", fn.Disabled)
			}
		}
		id := b.refresh(t, `{"force":true}`)
		r := b.waitStatus(t, id, store.StatusFailed)
		if !strings.Contains(r.Error, "GITHUB_TOKEN is not set") {
			t.Errorf("error %q", r.Error)
		}
		if s := b.steps(t, id)["fetch-github-data"]; len(s.Attempts) != 1 {
			t.Errorf("%d attempts, want 1", len(s.Attempts))
		}
	})
}
