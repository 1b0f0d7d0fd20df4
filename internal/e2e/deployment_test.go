package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/daemon/daemontest"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
)

// The deployment's settings, as its owner would set them.
const (
	eventKey   = "e2e-event-key"
	signingKey = "e2e-signing-key"
	resendKey  = "re_e2e_key"
	githubKey  = "ghp_e2e_token"
	siteOrigin = "https://cyberdrew.dev"
	owner      = "owner@cyberdrew.dev"
	sender     = "contact@cyberdrew.dev"
	githubUser = "dcyfr"
	// resendHookSecret and githubHookSecret sign the two webhooks, as
	// Resend and GitHub show them when the endpoint is created.
	resendHookSecret = "whsec_ZTJlLXJlc2VuZC13ZWJob29rLXNpZ25pbmcta2V5"
	githubHookSecret = "e2e-github-webhook-secret"
	// proxy is the reverse proxy in front of the daemon (Caddy, nginx, a
	// Vercel rewrite): the only peer whose X-Forwarded-For is believed.
	proxy = "127.0.0.1"
)

// epoch is the fake clock's start: a Wednesday, clear of every cron tick of
// the site's functions (*/5, hourly, daily) by more than the tests advance.
var epoch = time.Date(2025, 3, 12, 10, 31, 0, 0, time.UTC)

// waitGuard only guards against a hang: every wait ends on what the test
// observes, long before it.
const waitGuard = 30 * time.Second

// deployment is one real daemon as the site runs it, with the fakes of the
// two internet APIs it calls and a fake clock.
type deployment struct {
	backend string               // "sqlite" or "redis"
	base    string               // http://127.0.0.1:port
	clock   *clockwork.FakeClock // nil on the real clock
	resend  *fakeResend
	github  *fakeGitHub
	store   store.Store
	// native reads the site's keys as the website does, with a plain
	// go-redis client (a cluster client on a Redis Cluster); nil on
	// SQLite.
	native goredis.UniversalClient
	// changed receives a tick after any change the daemon streams.
	changed chan struct{}
}

// clusterSlots bounds the clusters the tests run at once.
var clusterSlots = make(chan struct{}, 2)

// clusterSitePrefix is the site prefix of a deployment on a Redis Cluster.
const clusterSitePrefix = "site:{engine}:"

// backends are the stores every test runs on.
var backends = []string{"sqlite", "redis"}

// onBoth runs test as parallel subtests "sqlite" and "redis", each on its
// own fresh deployment. Without redis-server the redis subtest skips
// loudly, or fails when CYBERDREW_TEST_REDIS=required.
func onBoth(t *testing.T, test func(t *testing.T, d *deployment)) {
	t.Helper()
	onEach(t, backends, test)
}

// onBothAndAPartitionedCluster is onBoth, and a deployment on a Redis
// Cluster with --redis-partitions 12 (the site's main flows, whose steps
// commit their keys ahead of their records there).
func onBothAndAPartitionedCluster(t *testing.T, test func(t *testing.T, d *deployment)) {
	t.Helper()
	onEach(t, append(slices.Clone(backends), "cluster-partitioned"), test)
}

// onEach runs test on a fresh deployment on each backend, as parallel
// subtests named after them.
func onEach(t *testing.T, backends []string, test func(t *testing.T, d *deployment)) {
	t.Helper()
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			test(t, deploy(t, backend, clockwork.NewFakeClockAt(epoch)))
		})
	}
}

// deploy starts a daemon on backend with clock, configured as the site's
// production one: both keys set, Resend and GitHub (fakes) configured, the
// site's origin allowed, a trusted reverse proxy on loopback. d.clock is
// nil unless clock is fake.
func deploy(t *testing.T, backend string, clock clockwork.Clock) *deployment {
	t.Helper()
	return deployOn(t, backend, clock, nil)
}

// deployOn is deploy on the redis-server srv when it is set (several
// daemons sharing one Redis), otherwise on a fresh one.
func deployOn(t *testing.T, backend string, clock clockwork.Clock, srv *redistest.Server) *deployment {
	t.Helper()
	return deployAt(t, backend, clock, srv, t.TempDir())
}

// deployAt is deployOn with the data dir dir, which may hold a store
// already (an upgrade).
func deployAt(t *testing.T, backend string, clock clockwork.Clock, srv *redistest.Server, dir string) *deployment {
	t.Helper()
	fake, _ := clock.(*clockwork.FakeClock)
	d := &deployment{
		backend: backend,
		clock:   fake,
		resend:  newFakeResend(t),
		github:  newFakeGitHub(t),
		changed: make(chan struct{}, 1),
	}
	cfg := config.DefaultServe(func(string) string { return "" })
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = dir
	cfg.Workers = 8
	cfg.Lease = time.Hour // the fake clock only moves when a test says so
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.EventKeys = []string{eventKey}
	cfg.SigningKey = signingKey
	cfg.ResendAPIKey = resendKey
	cfg.ResendBaseURL = d.resend.url
	cfg.ContactFrom = sender
	cfg.ContactTo = owner
	cfg.GitHubToken = githubKey
	cfg.GitHubAPIURL = d.github.url + "/graphql"
	cfg.GitHubUser = githubUser
	cfg.ResendWebhookSecret = resendHookSecret
	cfg.GitHubWebhookSecret = githubHookSecret
	cfg.CORSOrigins = []string{siteOrigin}
	cfg.TrustedProxies = []string{proxy}
	switch backend {
	case "cluster", "cluster-partitioned":
		// Six redis-server processes a cluster: a few at a time, so that
		// the tests' clusters do not starve each other (and the daemons
		// under test) of CPU on a small CI machine.
		clusterSlots <- struct{}{}
		t.Cleanup(func() { <-clusterSlots })
		// Three masters and their replicas; the site's keys carry the
		// engine's hash tag, as the daemon requires on a cluster. A
		// partitioned deployment spreads the engine's records over 12
		// partitions, 4 a master on the test cluster.
		cl := redistest.StartClusterT(t)
		if backend == "cluster-partitioned" {
			cfg.RedisPartitions = 12
		}
		cfg.Store = cl.URL()
		cfg.SitePrefix = clusterSitePrefix
		addrs := make([]string, len(cl.Nodes))
		for i, n := range cl.Nodes {
			addrs[i] = n.Addr
		}
		d.native = goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs})
		t.Cleanup(func() { d.native.Close() })
	case "redis":
		if srv == nil {
			srv = redistest.StartT(t, false)
		}
		cfg.Store = srv.URL(0)
		d.native = goredis.NewClient(&goredis.Options{Addr: srv.Addr})
		t.Cleanup(func() { d.native.Close() })
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the deployment's configuration: %v", err)
	}
	dmn := daemontest.Run(t, cfg, nil, daemon.Options{Clock: clock})
	d.base = "http://" + dmn.Addr()
	d.store = dmn.Store()
	d.follow(t)
	return d
}

// follow reads the daemon's change stream until the test ends and ticks
// d.changed after each change, so that waitFor re-checks on every change
// and never polls.
func (d *deployment) follow(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/v1/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+signingKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("follow the stream: %v", err)
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		t.Fatalf("follow the stream: %s", res.Status)
	}
	go func() {
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data:") {
				select {
				case d.changed <- struct{}{}:
				default: // a tick is already pending
				}
			}
		}
	}()
}

// waitFor re-checks cond after every change the daemon streams until it
// holds; the guard only fails a test that hangs.
func (d *deployment) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	guard := time.NewTimer(waitGuard)
	defer guard.Stop()
	for !cond() {
		select {
		case <-d.changed:
		case <-guard.C:
			t.Fatalf("%s: timed out waiting for %s", d.backend, what)
		}
	}
}

// reply is an HTTP answer, its body read.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// decode reads the body as JSON into v.
func (r reply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

// do sends one request and reads the whole answer.
func (d *deployment) do(t *testing.T, method, path string, header http.Header, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, d.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read the answer: %v", method, path, err)
	}
	return reply{status: res.StatusCode, header: res.Header, body: raw}
}

// admin calls the admin API with the signing key and decodes a 2xx answer
// into out (when not nil); any other status fails the test.
func (d *deployment) admin(t *testing.T, method, path, body string, out any) {
	t.Helper()
	r := d.do(t, method, path, http.Header{"Authorization": {"Bearer " + signingKey}}, body)
	if r.status/100 != 2 {
		t.Fatalf("%s %s: %d %s", method, path, r.status, r.body)
	}
	if out != nil {
		r.decode(t, out)
	}
}

// run is a run as GET /v1/runs lists it.
type run struct {
	RunID      string          `json:"run_id"`
	EventID    string          `json:"event_id"`
	FunctionID string          `json:"function_id"`
	Status     string          `json:"status"`
	Output     json.RawMessage `json:"output"`
	Error      string          `json:"error"`
}

// String is the run as a failure message shows it.
func (r run) String() string {
	return r.FunctionID + " " + r.RunID + " " + r.Status + " " + string(r.Output) + r.Error
}

// runs lists fn's runs, of any status when statuses is empty.
func (d *deployment) runs(t *testing.T, fn string, statuses ...string) []run {
	t.Helper()
	q := url.Values{"function": {fn}, "limit": {"1000"}}
	for _, s := range statuses {
		q.Add("status", s)
	}
	var page struct {
		Data []run `json:"data"`
	}
	d.admin(t, http.MethodGet, "/v1/runs?"+q.Encode(), "", &page)
	return page.Data
}

// awaitRuns waits until fn has n completed runs and returns them; a run of
// fn that fails ends the wait and the test.
func (d *deployment) awaitRuns(t *testing.T, fn string, n int) []run {
	t.Helper()
	var done []run
	d.waitFor(t, "completed runs of "+fn, func() bool {
		done = done[:0]
		for _, r := range d.runs(t, fn) {
			switch r.Status {
			case "Completed":
				done = append(done, r)
			case "Failed", "Cancelled", "Skipped":
				t.Fatalf("%s run %s ended %s: %s", fn, r.RunID, r.Status, r.Error)
			}
		}
		return len(done) >= n
	})
	if len(done) != n {
		t.Fatalf("%s: %d completed runs, want %d", fn, len(done), n)
	}
	return done
}

// event is an event as GET /v1/events lists it.
type event struct {
	InternalID string          `json:"internal_id"`
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Data       json.RawMessage `json:"data"`
}

// events lists every stored event named name (every event when name is
// empty), following the cursor.
func (d *deployment) events(t *testing.T, name string) []event {
	t.Helper()
	var all []event
	cursor := ""
	for {
		q := url.Values{"limit": {"1000"}}
		if name != "" {
			q.Set("name", name)
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page struct {
			Data   []event `json:"data"`
			Cursor string  `json:"cursor"`
		}
		d.admin(t, http.MethodGet, "/v1/events?"+q.Encode(), "", &page)
		all = append(all, page.Data...)
		if page.Cursor == "" {
			return all
		}
		cursor = page.Cursor
	}
}

// everyEventHasAnID lists every event the deployment stored and fails the
// test for any whose id is empty: none of the site's callers sends one.
func (d *deployment) everyEventHasAnID(t *testing.T) {
	t.Helper()
	all := d.events(t, "")
	if len(all) == 0 {
		t.Fatalf("no event was stored")
	}
	var empty []string
	for _, e := range all {
		if e.ID == "" {
			empty = append(empty, e.InternalID+" ("+e.Name+")")
		}
	}
	if len(empty) > 0 {
		t.Errorf("GET /v1/events: %d of %d events have an empty id, as %s", len(empty), len(all), strings.Join(empty[:min(3, len(empty))], ", "))
	}
}

// intake posts body to the event API, POST /e/{key}, with header, and
// returns the accepted ids; any answer but 200 fails the test.
func (d *deployment) intake(t *testing.T, header http.Header, body string) []string {
	t.Helper()
	r := d.do(t, http.MethodPost, "/e/"+eventKey, header, body)
	var acc struct {
		IDs    []string `json:"ids"`
		Status int      `json:"status"`
	}
	if r.status != http.StatusOK {
		t.Fatalf("POST /e/{key}: %d %s", r.status, r.body)
	}
	r.decode(t, &acc)
	if acc.Status != http.StatusOK {
		t.Fatalf("POST /e/{key}: status %d in %s", acc.Status, r.body)
	}
	return acc.IDs
}

// get reads a site key as the website does: with a plain Redis client on
// Redis (under the site prefix of a cluster deployment), through the
// store's key-value API on SQLite; "" when absent.
func (d *deployment) get(t *testing.T, key string) string {
	t.Helper()
	ctx := context.Background()
	if strings.HasPrefix(d.backend, "cluster") && !strings.HasPrefix(key, clusterSitePrefix) {
		key = clusterSitePrefix + key
	}
	if d.native != nil {
		v, err := d.native.Get(ctx, key).Result()
		if errors.Is(err, goredis.Nil) {
			return ""
		}
		if err != nil {
			t.Fatalf("redis GET %s: %v", key, err)
		}
		return v
	}
	v, err := d.store.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return v
}
