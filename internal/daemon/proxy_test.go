package daemon_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	cdclient "github.com/dcyfr/cyberdrew/internal/client"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/daemon/daemontest"
	"github.com/dcyfr/cyberdrew/internal/testkit"
)

// rawCall sends one request with headers (name, value pairs; "Host" sets
// the Host) and returns the status and the "error" of a JSON error answer.
func rawCall(t *testing.T, method, url, body string, headers ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	var e struct {
		Error string `json:"error"`
	}
	if res.StatusCode >= 400 { // a success may be an endless stream: not read
		raw, _ := io.ReadAll(res.Body)
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: %d with Content-Type %q: %s", method, url, res.StatusCode, ct, raw)
		}
		if err := json.Unmarshal(raw, &e); err != nil || e.Error == "" {
			t.Errorf("%s %s: %d without a JSON error: %s", method, url, res.StatusCode, raw)
		}
	}
	return res.StatusCode, e.Error
}

// TestNoKeysBehindALoopbackReverseProxy is issue 13's deployment: a daemon on
// 127.0.0.1 with no keys, a reverse proxy on the same machine in front of
// it. Everything of the admin API, /metrics and the event API that comes
// through the proxy gets 401 naming the variable to set; the site's public
// routes still answer through it; the developer on the machine itself still
// works without keys, and a web page cannot make the browser act for them.
func TestNoKeysBehindALoopbackReverseProxy(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	// The README's deployment sets it for the site routes: it opens nothing.
	cfg.TrustedProxies = []string{"127.0.0.1"}
	cfg.CORSOrigins = []string{"https://cyberdrew.dev"} // the site's pages, as the README sets it
	logs := &testkit.SyncBuffer{}
	base := "http://" + daemontest.Run(t, cfg, slog.New(slog.NewTextHandler(logs, nil)), daemon.Options{}).Addr()
	for _, want := range []string{
		"dev mode: INNGEST_EVENT_KEY is not set", "dev mode: INNGEST_SIGNING_KEY is not set",
		"CYBERDREW_TRUSTED_PROXIES opens nothing",
	} {
		if n := strings.Count(logs.String(), want); n != 1 {
			t.Errorf("the start-up log says %q %d times:\n%s", want, n, logs)
		}
	}
	target, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	proxies := map[string]http.Handler{
		// Caddy's reverse_proxy: the client's Host kept, X-Forwarded-For,
		// -Host and -Proto added.
		"Host kept, X-Forwarded-*": &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		}},
		// The proxy's own loopback Host, and X-Forwarded-For.
		"loopback Host, X-Forwarded-For": httputil.NewSingleHostReverseProxy(target),
		// RFC 7239 only.
		"Forwarded": &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set("Forwarded", "for=203.0.113.9;proto=https")
		}},
		// Only Via, with the upstream as Host.
		"Via": &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set("Via", "1.1 proxy")
		}},
	}
	requests := []struct {
		method, path, body, variable string
	}{
		{"GET", "/v1/events", "", "INNGEST_SIGNING_KEY"},
		{"GET", "/v1/events/x", "", "INNGEST_SIGNING_KEY"},
		{"GET", "/v1/events/x/runs", "", "INNGEST_SIGNING_KEY"},
		{"GET", "/v1/runs", "", "INNGEST_SIGNING_KEY"},
		{"GET", "/v1/runs/x", "", "INNGEST_SIGNING_KEY"},
		{"GET", "/v1/functions", "", "INNGEST_SIGNING_KEY"},
		{"GET", "/v1/stats", "", "INNGEST_SIGNING_KEY"},
		{"GET", "/v1/stream", "", "INNGEST_SIGNING_KEY"},
		{"GET", "/metrics", "", "INNGEST_SIGNING_KEY"},
		{"DELETE", "/v1/runs/x", "", "INNGEST_SIGNING_KEY"},
		{"POST", "/v1/runs/x/rerun", "", "INNGEST_SIGNING_KEY"},
		{"POST", "/v1/functions/hello-world/invoke", `{"data":{"email":"proxied@b.c"}}`, "INNGEST_SIGNING_KEY"},
		{"POST", "/e/anykey", `{"name":"test/hello.world","data":{"email":"proxied@b.c"}}`, "INNGEST_EVENT_KEY"},
		{"POST", "/e", `{"name":"test/hello.world","data":{"email":"proxied@b.c"}}`, "INNGEST_EVENT_KEY"},
	}
	for name, proxy := range proxies {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			front := httptest.NewServer(proxy)
			t.Cleanup(front.Close)
			for _, host := range []string{"", "jobs.example.com"} {
				for _, r := range requests {
					headers := []string{"Content-Type", "application/json", "Authorization", "Bearer guessed"}
					if host != "" {
						headers = append(headers, "Host", host)
					}
					code, msg := rawCall(t, r.method, front.URL+r.path, r.body, headers...)
					if code != http.StatusUnauthorized || !strings.Contains(msg, r.variable+" is not set") || !strings.Contains(msg, "set "+r.variable) {
						t.Errorf("%s %s (Host %q) through the proxy: %d %q, want 401 naming %s", r.method, r.path, host, code, msg, r.variable)
					}
				}
			}
			for _, probe := range []string{"/health", "/readyz", "/api/analytics"} {
				if code, msg := rawCall(t, "GET", front.URL+probe, ""); code != http.StatusOK {
					t.Errorf("GET %s through the proxy: %d %s", probe, code, msg)
				}
			}
		})
	}

	// The site's contact form still posts through the proxy, as the browser
	// sends it: cross-site, from the site's origin.
	front := httptest.NewServer(proxies["Host kept, X-Forwarded-*"])
	t.Cleanup(front.Close)
	code, msg := rawCall(t, "POST", front.URL+"/api/contact",
		`{"name":"Eve Example","email":"eve@example.com","message":"hello there, this is a test"}`,
		"Content-Type", "application/json", "Host", "jobs.example.com", "Origin", "https://cyberdrew.dev", "Sec-Fetch-Site", "cross-site")
	if code != http.StatusOK {
		t.Errorf("POST /api/contact through the proxy: %d %s", code, msg)
	}

	// On the machine itself, without keys, the client does everything.
	ctx := t.Context()
	c, err := cdclient.New(cdclient.Options{URL: base})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := c.Send(ctx, cdclient.Event{Name: "test/hello.world", Data: json.RawMessage(`{"email":"a@b.c"}`), TS: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()})
	if err != nil || len(ids) != 1 {
		t.Fatalf("send straight to the daemon: %v %v", ids, err)
	}
	runs, err := c.EventRuns(ctx, ids[0])
	if err != nil || len(runs) != 1 {
		t.Fatalf("the event's runs: %v %v", runs, err)
	}
	if r, err := c.Cancel(ctx, runs[0].RunID); err != nil || r.Status != "Cancelled" {
		t.Errorf("cancel: %+v %v", r, err)
	}
	if ref, err := c.Rerun(ctx, runs[0].RunID); err != nil || ref.RunID == "" {
		t.Errorf("rerun: %+v %v", ref, err)
	}
	if inv, err := c.Invoke(ctx, "hello-world", json.RawMessage(`{"email":"b@c.d"}`)); err != nil || len(inv.RunIDs) != 1 {
		t.Errorf("invoke: %+v %v", inv, err)
	}
	if _, err := c.Runs(ctx, cdclient.RunFilter{}); err != nil {
		t.Errorf("runs list: %v", err)
	}
	before, err := c.Events(ctx, cdclient.EventFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing sent through the proxy was stored: only the contact form's
	// event and the client's two (sent, invoked).
	names := map[string]int{}
	for _, e := range before.Data {
		names[e.Name]++
		if strings.Contains(string(e.Data), "proxied@") {
			t.Errorf("an event sent through the proxy was stored: %s %s", e.Name, e.Data)
		}
	}
	if len(before.Data) != 3 || names["contact/form.submitted"] != 1 || names["test/hello.world"] != 1 {
		t.Errorf("events stored: %v", names)
	}

	// A web page the developer visits cannot act for them, and a page on a
	// rebound DNS name cannot read.
	crossSite := []struct {
		name    string
		method  string
		path    string
		headers []string
		status  int
	}{
		{"text/plain invoke", "POST", "/v1/functions/hello-world/invoke", []string{"Content-Type", "text/plain"}, 403},
		{"text/plain rerun", "POST", "/v1/runs/" + runs[0].RunID + "/rerun", []string{"Content-Type", "text/plain"}, 403},
		{"text/plain event", "POST", "/e/anykey", []string{"Content-Type", "text/plain"}, 403},
		{"form event", "POST", "/e/anykey", []string{"Content-Type", "application/x-www-form-urlencoded"}, 403},
		{"JSON event from another site", "POST", "/e/anykey", []string{"Content-Type", "application/json", "Sec-Fetch-Site", "cross-site"}, 403},
		{"JSON invoke with a foreign Origin", "POST", "/v1/functions/hello-world/invoke", []string{"Content-Type", "application/json", "Origin", "http://evil.example"}, 403},
		{"events read on a rebound name", "GET", "/v1/events", []string{"Host", "rebind.example:8288"}, 403},
		{"event sent on a rebound name", "POST", "/e/anykey", []string{"Content-Type", "application/json", "Host", "rebind.example:8288"}, 403},
	}
	for _, cs := range crossSite {
		body := ""
		if cs.method == "POST" {
			body = `{"name":"test/hello.world","data":{"email":"x@y.z"}}`
			if strings.HasSuffix(cs.path, "/invoke") {
				body = `{"data":{"email":"x@y.z"}}`
			}
		}
		if code, msg := rawCall(t, cs.method, base+cs.path, body, cs.headers...); code != cs.status {
			t.Errorf("%s: %d %q, want %d", cs.name, code, msg, cs.status)
		}
	}
	after, err := c.Events(ctx, cdclient.EventFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Data) != len(before.Data) {
		t.Errorf("refused cross-site requests stored %d events", len(after.Data)-len(before.Data))
	}
}
