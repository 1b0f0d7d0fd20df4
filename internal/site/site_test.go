package site_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/api"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/site"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

var now = time.Date(2025, 3, 12, 10, 30, 0, 0, time.UTC)

type bundle struct {
	ctx    context.Context
	st     store.Store
	clock  *clockwork.FakeClock
	url    string
	native *backendtest.Native // nil but on Redis
}

// setup serves the site routes, mounted on the api handler, on loopback,
// publishing into a real engine on a fresh store on be (no workers: the
// events are what the routes produce).
func setup(t *testing.T, be backendtest.Backend, cfg site.Config) *bundle {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	clock := clockwork.NewFakeClockAt(now)
	st, native := be.Open(t, ctx, clock)
	eng, err := engine.New(engine.Options{Store: st, Clock: clock, Validate: jobs.Validate})
	if err != nil {
		t.Fatal(err)
	}
	s := site.New(cfg, eng, st, clock, nil)
	srv := httptest.NewServer(api.New(api.Config{Routes: s.Routes()}, eng, st, discard()))
	t.Cleanup(srv.Close)
	return &bundle{ctx: ctx, st: st, clock: clock, url: srv.URL, native: native}
}

// req is one request and the answer it should get.
type req struct {
	method, path, body string
	header             map[string]string
}

type reply struct {
	status int
	body   string // JSON compared after decoding; "" skips
	header http.Header
}

func (b *bundle) do(t *testing.T, q req) reply {
	t.Helper()
	if q.method == "" {
		q.method = http.MethodPost
	}
	r, err := http.NewRequest(q.method, b.url+q.path, strings.NewReader(q.body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
	for k, v := range q.header {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: strings.TrimSpace(string(body)), header: resp.Header}
}

func sameJSON(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

func (b *bundle) events(t *testing.T, name string) []store.Event {
	t.Helper()
	p, err := b.st.ListEvents(b.ctx, store.EventFilter{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return p.Items
}

// seed writes a string the way the website's other writers do: a plain
// SET on Redis, which the routes must read as they read their own keys;
// the store's Set on SQLite.
func (b *bundle) seed(t *testing.T, key, value string) {
	t.Helper()
	var err error
	if b.native != nil {
		err = b.native.Client.Set(b.ctx, b.native.Key(key), value, 0).Err()
	} else {
		err = b.st.Set(b.ctx, key, value, 0)
	}
	if err != nil {
		t.Fatalf("seed %s: %v", key, err)
	}
}

func check(t *testing.T, name string, got reply, want reply) {
	t.Helper()
	if got.status != want.status || (want.body != "" && !sameJSON(got.body, want.body)) {
		t.Errorf("%s: %d %s, want %d %s", name, got.status, got.body, want.status, want.body)
	}
}

const success = `{"success":true,"message":"Message received successfully. You'll receive a confirmation email shortly."}`

func TestContactRejectsInOrder(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, site.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
		long := strings.Repeat("x", 1200)
		tests := []struct {
			name, body string
			want       reply
		}{
			{"invalid JSON", `{"name":`, reply{400, `{"error":"Invalid JSON body"}`, nil}},
			{"not an object", `[1]`, reply{400, `{"error":"Invalid JSON body"}`, nil}},
			{"honeypot beats missing fields", `{"website":"spam.example"}`, reply{200, success, nil}},
			{"missing message beats a bad email", `{"name":"Ada","email":"nope"}`, reply{400, `{"error":"All fields are required"}`, nil}},
			{"blank name", `{"name":"  ","email":"ada@example.com","message":"Hello there friend"}`, reply{400, `{"error":"All fields are required"}`, nil}},
			{"bad email beats a short name", `{"name":"A","email":"ada@@example","message":"hi"}`, reply{400, `{"error":"Invalid email address"}`, nil}},
			{"short name beats a short message", `{"name":" A ","email":"ada@example.com","message":"hi"}`, reply{400, `{"error":"Name must be at least 2 characters"}`, nil}},
			{"short message", `{"name":"Ada","email":"ada@example.com","message":"  too short "}`, reply{400, `{"error":"Message must be at least 10 characters"}`, nil}},
			{"a name that is not a string", `{"name":123,"email":"ada@example.com","message":"Hello there friend"}`, reply{400, `{"error":"Invalid name"}`, nil}},
			{"a message that is not a string", `{"name":"Ada","email":"ada@example.com","message":["Hello there friend"]}`, reply{400, `{"error":"Invalid message"}`, nil}},
			{"a header in the name", `{"name":"Bob\r\nBcc: evil@example.com","email":"ada@example.com","message":"Hello there friend"}`, reply{400, `{"error":"Name must not hold control characters"}`, nil}},
			{"a NUL in the message", `{"name":"Ada","email":"ada@example.com","message":"Hello there\u0000 friend"}`, reply{400, `{"error":"Message must not hold control characters"}`, nil}},
			{"valid, long fields cut", `{"name":"Ada","email":" ada@example.com ","message":"` + long + `"}`, reply{200, success, nil}},
		}
		for i, tt := range tests {
			// A distinct client per case, so the rate limit stays out of the way.
			got := b.do(t, req{path: "/api/contact", body: tt.body, header: map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i+1)}})
			check(t, tt.name, got, tt.want)
		}
		evs := b.events(t, jobs.EventContactSubmitted)
		if len(evs) != 1 {
			t.Fatalf("%d contact events, want 1", len(evs))
		}
		var sub jobs.ContactSubmission
		json.Unmarshal(evs[0].Data, &sub)
		if sub.Email != "ada@example.com" || len(sub.Message) != 1000 || sub.SubmittedAt != "2025-03-12T10:30:00Z" || sub.IP != fmt.Sprintf("198.51.100.%d", len(tests)) {
			t.Errorf("event %+v", sub)
		}
	})
}

func TestContactRateLimitComesFirstAndBucketsArePerRoute(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, site.Config{})
		for i := range 3 {
			got := b.do(t, req{path: "/api/contact", body: `not json`})
			if got.status != 400 || got.header.Get("X-RateLimit-Remaining") != fmt.Sprint(2-i) {
				t.Fatalf("request %d: %d remaining %q", i, got.status, got.header.Get("X-RateLimit-Remaining"))
			}
		}
		got := b.do(t, req{path: "/api/contact", body: `not json`})
		check(t, "fourth", got, reply{429, `{"error":"Too many requests. Please try again later.","retryAfter":60}`, nil})
		h := got.header
		if h.Get("Retry-After") != "60" || h.Get("X-RateLimit-Limit") != "3" || h.Get("X-RateLimit-Remaining") != "0" || h.Get("X-RateLimit-Reset") != fmt.Sprint(now.Add(time.Minute).Unix()) {
			t.Errorf("headers %v", h)
		}
		// The views bucket is its own.
		view := `{"slug":"a","sessionId":"session-0001","isVisible":true,"timeOnPage":6000}`
		check(t, "views after contact limit", b.do(t, req{path: "/api/views", body: view}), reply{200, `{"recorded":true}`, nil})
		b.clock.Advance(time.Minute)
		check(t, "after the window", b.do(t, req{path: "/api/contact", body: `not json`}), reply{400, "", nil})
	})
}

func TestForwardedForIsIgnoredFromUntrustedPeers(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, site.Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
		body := `{"name":"Ada","email":"ada@example.com","message":"Hello there, friend"}`
		check(t, "contact", b.do(t, req{path: "/api/contact", body: body, header: map[string]string{"X-Forwarded-For": "203.0.113.7"}}), reply{200, success, nil})
		var sub jobs.ContactSubmission
		json.Unmarshal(b.events(t, jobs.EventContactSubmitted)[0].Data, &sub)
		if sub.IP != "127.0.0.1" {
			t.Errorf("ip %q, want the socket peer", sub.IP)
		}
	})
}

func TestViewsRejectInOrder(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, site.Config{})
		view := func(fields string) string {
			return `{"slug":"go/durable","title":"Durable Go","sessionId":"abcdefghij_1","isVisible":true,"timeOnPage":6000,"referrer":"https://news.example/"` + fields + `}`
		}
		notRecorded := func(reason string) reply { return reply{200, `{"recorded":false,"reason":"` + reason + `"}`, nil} }
		tests := []struct {
			name string
			q    req
			want reply
		}{
			{"invalid JSON", req{body: `{`}, reply{400, `{"error":"Invalid JSON body"}`, nil}},
			{"bad slug beats a bad session", req{body: `{"slug":"Bad Slug","sessionId":"x"}`}, reply{400, `{"error":"Invalid slug"}`, nil}},
			{"short session", req{body: view(`,"sessionId":"short"`)}, reply{400, `{"error":"Invalid sessionId"}`, nil}},
			{"session with bad characters", req{body: view(`,"sessionId":"abc def ghij k"`)}, reply{400, `{"error":"Invalid sessionId"}`, nil}},
			{"invisible beats a bot", req{body: view(`,"isVisible":false`), header: map[string]string{"User-Agent": "Googlebot/2.1"}}, notRecorded("not visible")},
			{"missing user agent", req{body: view(""), header: map[string]string{"User-Agent": ""}}, reply{400, `{"error":"Invalid user agent"}`, nil}},
			{"bot user agent", req{body: view(""), header: map[string]string{"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"}}, reply{400, `{"error":"Invalid user agent"}`, nil}},
			{"short user agent", req{body: view(""), header: map[string]string{"User-Agent": "Mozilla"}}, reply{400, `{"error":"Invalid user agent"}`, nil}},
			{"too little time", req{body: view(`,"timeOnPage":4999`)}, notRecorded("too short")},
			{"time on page as a string", req{body: view(`,"timeOnPage":"6000"`)}, reply{400, `{"error":"Invalid timeOnPage"}`, nil}},
			{"visible as a string", req{body: view(`,"isVisible":"yes"`)}, reply{400, `{"error":"Invalid isVisible"}`, nil}},
			{"referrer as an object", req{body: view(`,"referrer":{"evil":1}`)}, reply{400, `{"error":"Invalid referrer"}`, nil}},
			{"title as a list", req{body: view(`,"title":["x"]`)}, reply{400, `{"error":"Invalid title"}`, nil}},
			{"session as a number", req{body: view(`,"sessionId":1234567890`)}, reply{400, `{"error":"Invalid sessionId"}`, nil}},
			{"recorded", req{body: view("")}, reply{200, `{"recorded":true}`, nil}},
			{"same session and post", req{body: view("")}, notRecorded("already counted")},
		}
		for _, tt := range tests {
			tt.q.path = "/api/views"
			check(t, tt.name, b.do(t, tt.q), tt.want)
		}
		if b.native != nil {
			// The session mark is a native key with a native 30-minute TTL.
			k := b.native.Key("views:session:abcdefghij_1:go/durable")
			if ttl, err := b.native.Client.PTTL(b.ctx, k).Result(); err != nil || ttl <= 29*time.Minute || ttl > 30*time.Minute {
				t.Errorf("PTTL %s = %v, %v; want about 30 minutes", k, ttl, err)
			}
		}
		evs := b.events(t, jobs.EventPostViewed)
		if len(evs) != 1 {
			t.Fatalf("%d view events", len(evs))
		}
		var ev jobs.PostViewed
		json.Unmarshal(evs[0].Data, &ev)
		if ev.Slug != "go/durable" || ev.Title != "" || ev.ViewedAt != "2025-03-12T10:30:00Z" || len(ev.Visitor) != 32 || strings.Contains(string(evs[0].Data), "127.0.0.1") {
			t.Errorf("event %s", evs[0].Data)
		}
		// The route remembers the post's first title itself; the event
		// carries none (TestVisitorsCannotRenameAPost, internal/e2e).
		if got, err := b.st.Get(b.ctx, "blog:post:go/durable:title"); err != nil || got != "Durable Go" {
			t.Errorf("the remembered title = %q, %v; want Durable Go", got, err)
		}
		// Ten counted requests per 300 s: the two above, then eight more.
		for i := range 8 {
			body := fmt.Sprintf(`{"slug":"p%d","sessionId":"abcdefghij_1","isVisible":true,"timeOnPage":6000}`, i)
			check(t, "within the limit", b.do(t, req{path: "/api/views", body: body}), reply{200, `{"recorded":true}`, nil})
		}
		got := b.do(t, req{path: "/api/views", body: `{"slug":"p9","sessionId":"abcdefghij_1","isVisible":true,"timeOnPage":6000}`})
		check(t, "eleventh", got, reply{429, `{"error":"Too many requests. Please try again later.","retryAfter":300}`, nil})
		b.clock.Advance(30 * time.Minute)
		check(t, "session window over", b.do(t, req{path: "/api/views", body: view("")}), reply{200, `{"recorded":true}`, nil})
	})
}

func TestGitHubContributions(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, site.Config{})
		get := func(q string) reply { return b.do(t, req{method: "GET", path: "/api/github-contributions" + q}) }
		check(t, "missing", get(""), reply{400, `{"error":"Username parameter is required"}`, nil})
		check(t, "invalid", get("?username=-bad-"), reply{400, `{"error":"Invalid username"}`, nil})
		check(t, "someone else", get("?username=torvalds"), reply{403, `{"error":"Only the site owner's contributions are served"}`, nil})
		miss := get("?username=DCYFR")
		check(t, "miss", miss, reply{503, `{"error":"Contributions are not cached yet; a refresh has started"}`, nil})
		if miss.header.Get("Retry-After") == "" || len(b.events(t, jobs.EventGitHubRefresh)) != 1 {
			t.Errorf("a miss must start a refresh and say when to retry: %v", miss.header)
		}
		cached := `{"contributions":[{"date":"2025-03-11","count":3}],"source":"github-api","totalContributions":3,"lastUpdated":"2025-03-12T10:00:00Z"}`
		if err := b.st.Set(b.ctx, "github:contributions:dcyfr", cached, 0); err != nil {
			t.Fatal(err)
		}
		hit := get("?username=dcyfr")
		check(t, "hit", hit, reply{200, cached, nil})
		if cc := hit.header.Get("Cache-Control"); cc != "public, s-maxage=300, stale-while-revalidate=600" {
			t.Errorf("cache-control %q", cc)
		}
	})
}

// TestGitHubContributionsWithoutToken: with no refresh possible, a miss
// says that refreshes are disabled and starts nothing.
func TestGitHubContributionsWithoutToken(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, site.Config{RefreshDisabled: "GITHUB_TOKEN is not set"})
		miss := b.do(t, req{method: "GET", path: "/api/github-contributions?username=dcyfr"})
		check(t, "miss", miss, reply{503, `{"error":"Contributions are not cached, and refreshes are disabled on this server: GITHUB_TOKEN is not set"}`, nil})
		if strings.Contains(miss.body, "has started") || miss.header.Get("Retry-After") != "" {
			t.Errorf("a miss without a possible refresh promised one: %s %v", miss.body, miss.header)
		}
		if n := len(b.events(t, jobs.EventGitHubRefresh)); n != 0 {
			t.Errorf("%d refresh events, want none", n)
		}
	})
}

// TestGitHubContributionsRateLimit: 10 per 60 s per IP, as the original,
// in a bucket of its own (JOBS.md: each route has its own).
func TestGitHubContributionsRateLimit(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, site.Config{})
		get := func() reply { return b.do(t, req{method: "GET", path: "/api/github-contributions"}) }
		for i := range 10 {
			got := get()
			if got.status != 400 || got.header.Get("X-RateLimit-Limit") != "10" || got.header.Get("X-RateLimit-Remaining") != fmt.Sprint(9-i) {
				t.Fatalf("request %d: %d limit %q remaining %q", i, got.status, got.header.Get("X-RateLimit-Limit"), got.header.Get("X-RateLimit-Remaining"))
			}
		}
		got := get()
		check(t, "eleventh", got, reply{429, `{"error":"Too many requests. Please try again later.","retryAfter":60}`, nil})
		if got.header.Get("Retry-After") != "60" {
			t.Errorf("headers %v", got.header)
		}
		// The contact bucket is its own.
		check(t, "contact after the contributions limit", b.do(t, req{path: "/api/contact", body: `not json`}), reply{400, "", nil})
		b.clock.Advance(time.Minute)
		check(t, "after the window", get(), reply{400, "", nil})
	})
}

func TestAnalyticsReads(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, site.Config{Prefix: "site:"})
		get := func(p string) reply { return b.do(t, req{method: "GET", path: p}) }
		check(t, "no trending yet", get("/api/analytics"), reply{200, `{"trending":[]}`, nil})
		for k, v := range map[string]string{
			"site:blog:trending":                 "[{\"slug\":\"a\",\"title\":\"A\",\"views\":5,\"recentViews\":5,\"score\":5}]",
			"site:views:post:a/b":                "42",
			"site:views:post:a/b:day:2025-03-12": "3",
			"site:views:post:a/b:day:2025-03-10": "2",
			"site:views:post:a/b:day:2025-03-05": "9",
		} {
			b.seed(t, k, v)
		}
		check(t, "trending", get("/api/analytics"), reply{200, `{"trending":[{"slug":"a","title":"A","views":5,"recentViews":5,"score":5}]}`, nil})
		check(t, "daily", get("/api/analytics/daily?slug=a/b&days=3"), reply{200, `{"slug":"a/b","days":[{"date":"2025-03-10","views":2},{"date":"2025-03-11","views":0},{"date":"2025-03-12","views":3}]}`, nil})
		check(t, "daily bad slug", get("/api/analytics/daily?slug=A"), reply{400, `{"error":"Invalid slug"}`, nil})
		check(t, "daily bad days", get("/api/analytics/daily?slug=a&days=91"), reply{400, `{"error":"days must be a whole number from 1 to 90"}`, nil})
		check(t, "post views", get("/api/views/a/b"), reply{200, `{"slug":"a/b","total":42,"last7Days":5}`, nil})
		check(t, "post views bad slug", get("/api/views/A"), reply{400, `{"error":"Invalid slug"}`, nil})
		check(t, "unknown route keeps the JSON 404", get("/api/nope"), reply{404, `{"error":"no such route"}`, nil})
		check(t, "wrong method keeps the JSON 405", get("/api/contact"), reply{405, `{"error":"method not allowed"}`, nil})
	})
}

func TestCORS(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, site.Config{Origins: []string{"https://cyberdrew.dev"}})
		ok := b.do(t, req{method: "OPTIONS", path: "/api/contact", header: map[string]string{"Origin": "https://cyberdrew.dev", "Access-Control-Request-Method": "POST"}})
		if ok.status != 204 || ok.header.Get("Access-Control-Allow-Origin") != "https://cyberdrew.dev" || ok.header.Get("Access-Control-Allow-Methods") != "POST, OPTIONS" || ok.header.Get("Access-Control-Allow-Headers") != "Content-Type" {
			t.Errorf("preflight %d %v", ok.status, ok.header)
		}
		bad := b.do(t, req{method: "OPTIONS", path: "/api/contact", header: map[string]string{"Origin": "https://evil.example"}})
		check(t, "preflight from elsewhere", bad, reply{403, `{"error":"Origin not allowed"}`, nil})
		got := b.do(t, req{method: "GET", path: "/api/analytics", header: map[string]string{"Origin": "https://cyberdrew.dev"}})
		if got.header.Get("Access-Control-Allow-Origin") != "https://cyberdrew.dev" {
			t.Errorf("allowed origin not echoed: %v", got.header)
		}
		got = b.do(t, req{method: "GET", path: "/api/analytics", header: map[string]string{"Origin": "https://evil.example"}})
		if got.header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("other origin allowed: %v", got.header)
		}
	})
}

// seedTraffic writes what track-post-view keeps for three days of views:
// the posts' counters, the day's post and referrer sets and the referrer
// counters, and a referrer from before the 30-day window.
func (b *bundle) seedTraffic(t *testing.T) {
	t.Helper()
	keys := jobs.Keys{Prefix: "site:"}
	for k, v := range map[string]string{
		keys.PostViews("a/b"):                                  "42",
		keys.PostViews("c"):                                    "8",
		keys.PostDayViews("a/b", "2025-03-12"):                 "3",
		keys.PostDayViews("c", "2025-03-12"):                   "1",
		keys.PostDayViews("a/b", "2025-03-10"):                 "2",
		keys.DayReferrer("2025-03-12", "news.ycombinator.com"): "3",
		keys.DayReferrer("2025-03-10", "www.google.com"):       "1",
		keys.DayReferrer("2025-02-01", "old.example"):          "100",
	} {
		b.seed(t, k, v)
	}
	for k, members := range map[string][]string{
		keys.DayPosts("2025-03-12"):     {"a/b", "c"},
		keys.DayPosts("2025-03-10"):     {"a/b"},
		keys.DayReferrers("2025-03-12"): {"news.ycombinator.com"},
		keys.DayReferrers("2025-03-10"): {"www.google.com"},
		keys.DayReferrers("2025-02-01"): {"old.example"},
		keys.DayVisitors("2025-03-12"):  {"visitor-hash-1"},
	} {
		if _, err := b.st.SetAdd(b.ctx, k, 0, members...); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSiteTrafficRead checks GET /api/analytics/site: the all-time total,
// every post's views per day with the empty days, the top referrers of the
// window, and nothing about a visitor.
func TestSiteTrafficRead(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, site.Config{Prefix: "site:"})
		get := func(p string) reply { return b.do(t, req{method: "GET", path: p}) }
		check(t, "nothing yet", get("/api/analytics/site?days=2"), reply{200, `{"totalViews":0,"days":[{"date":"2025-03-11","views":0},{"date":"2025-03-12","views":0}],"topReferrers":[]}`, nil})
		b.seedTraffic(t)
		check(t, "three days", get("/api/analytics/site?days=3"), reply{200, `{"totalViews":50,"days":[{"date":"2025-03-10","views":2},{"date":"2025-03-11","views":0},{"date":"2025-03-12","views":4}],"topReferrers":[{"host":"news.ycombinator.com","views":3},{"host":"www.google.com","views":1}]}`, nil})
		if got := get("/api/analytics/site"); got.status != 200 || strings.Count(got.body, `"date"`) != 30 || strings.Contains(got.body, "old.example") || strings.Contains(got.body, "visitor") {
			t.Errorf("default window: %d %s, want 30 days without the older referrer or any visitor", got.status, got.body)
		}
		check(t, "bad days", get("/api/analytics/site?days=0"), reply{400, `{"error":"days must be a whole number from 1 to 90"}`, nil})
	})
}

// TestAnalyticsPage checks the page's HTTP side: HTML with the data, cache
// headers, a 304 for its ETag, HEAD without a body, the title of a post
// escaped, and no page when it is off.
func TestAnalyticsPage(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, site.Config{Prefix: "site:", AnalyticsPage: "/stats"})
		b.seedTraffic(t)
		b.seed(t, "site:blog:trending", `[{"slug":"a/b","title":"<script>alert(1)</script>","views":42,"recentViews":5,"score":0.6}]`)
		got := b.do(t, req{method: "GET", path: "/stats"})
		h := got.header
		if got.status != 200 || h.Get("Content-Type") != "text/html; charset=utf-8" || h.Get("Cache-Control") != "public, max-age=60" || h.Get("ETag") == "" {
			t.Fatalf("GET /stats: %d %v", got.status, h)
		}
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
			t.Errorf("Content-Security-Policy %q, want no script allowed", csp)
		}
		for _, want := range []string{
			`<html lang="en">`, `<main>`, `<h1>Analytics</h1>`, `id="total-views">50<`, `6 in the last 30 days`,
			`<svg class="chart" id="daily-chart" role="img" aria-labelledby="chart-title chart-desc"`,
			`the busiest, 2025-03-12, had 4 views.`,
			`height="190.00" data-date="2025-03-12" data-views="4"`, `height="95.00" data-date="2025-03-10" data-views="2"`,
			`<th scope="row">2025-03-11</th><td class="num">0</td>`,
			`&lt;script&gt;alert(1)&lt;/script&gt;</a>`, `href="https://cyberdrew.dev/blog/a/b"`,
			`<th scope="row">news.ycombinator.com</th><td class="num">3</td>`,
		} {
			if !strings.Contains(got.body, want) {
				t.Errorf("the page lacks %s", want)
			}
		}
		if n := strings.Count(got.body, `<rect class="bar"`); n != 30 {
			t.Errorf("%d bars, want 30", n)
		}
		if strings.Contains(got.body, "<script") || strings.Contains(got.body, "old.example") {
			t.Errorf("the page carries a script or a referrer outside its window")
		}

		again := b.do(t, req{method: "GET", path: "/stats", header: map[string]string{"If-None-Match": `W/"other", ` + h.Get("ETag")}})
		if again.status != http.StatusNotModified || again.body != "" || again.header.Get("ETag") != h.Get("ETag") {
			t.Errorf("revalidation: %d %q etag %q, want 304 without a body", again.status, again.body, again.header.Get("ETag"))
		}
		head := b.do(t, req{method: "HEAD", path: "/stats"})
		if head.status != 200 || head.body != "" || head.header.Get("ETag") != h.Get("ETag") {
			t.Errorf("HEAD: %d %q", head.status, head.body)
		}
		b.seed(t, "site:views:post:c", "9")
		if changed := b.do(t, req{method: "GET", path: "/stats", header: map[string]string{"If-None-Match": h.Get("ETag")}}); changed.status != 200 || !strings.Contains(changed.body, `id="total-views">51<`) {
			t.Errorf("after a new view: %d, want 200 with the new total", changed.status)
		}

		off := setup(t, be, site.Config{})
		if r := off.do(t, req{method: "GET", path: "/analytics"}); r.status != http.StatusNotFound {
			t.Errorf("GET /analytics with the page off: %d, want 404", r.status)
		}
	})
}
