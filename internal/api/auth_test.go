package api_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dcyfr/cyberdrew/internal/api"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// okHandler stands for /metrics and the site's routes.
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ok\n"))
})

// TestDevModeOnlyFromThisMachine: with no keys set, each side answers a
// request straight from this machine and refuses one through a proxy (401
// naming the variable to set) or for a foreign Host (403).
func TestDevModeOnlyFromThisMachine(t *testing.T) {
	t.Parallel()
	const (
		signing = "INNGEST_SIGNING_KEY"
		event   = "INNGEST_EVENT_KEY"
	)
	tests := []struct {
		name    string
		headers []string
		status  int
		want    string // in the error
	}{
		{"direct", nil, http.StatusOK, ""},
		{"Host localhost with a port", []string{"Host", "localhost:9999"}, http.StatusOK, ""},
		{"Host LOCALHOST without a port", []string{"Host", "LOCALHOST"}, http.StatusOK, ""},
		{"Host ::1", []string{"Host", "[::1]:8288"}, http.StatusOK, ""},
		{"Host ::1 without a port", []string{"Host", "[::1]"}, http.StatusOK, ""},
		{"Host 127.0.0.2", []string{"Host", "127.0.0.2"}, http.StatusOK, ""},
		{"X-Forwarded-For", []string{"X-Forwarded-For", "203.0.113.9"}, http.StatusUnauthorized, "X-Forwarded-For header"},
		{"X-Forwarded-Proto", []string{"X-Forwarded-Proto", "https"}, http.StatusUnauthorized, "X-Forwarded-Proto header"},
		{"X-Forwarded-Host", []string{"X-Forwarded-Host", "127.0.0.1"}, http.StatusUnauthorized, "X-Forwarded-Host header"},
		{"Forwarded", []string{"Forwarded", "for=203.0.113.9"}, http.StatusUnauthorized, "Forwarded header"},
		{"Via", []string{"Via", "1.1 caddy"}, http.StatusUnauthorized, "Via header"},
		{"X-Real-IP", []string{"X-Real-IP", "203.0.113.9"}, http.StatusUnauthorized, "X-Real-Ip header"},
		{"a proxy that keeps the public Host", []string{"Host", "jobs.example.com", "X-Forwarded-For", "203.0.113.9"}, http.StatusUnauthorized, "through a proxy"},
		{"foreign Host (DNS rebinding)", []string{"Host", "rebind.example:8288"}, http.StatusForbidden, `Host "rebind.example:8288" is not 127.0.0.1, ::1 or localhost`},
		{"a name under localhost", []string{"Host", "evil.localhost"}, http.StatusForbidden, "is not 127.0.0.1"},
		{"a private address", []string{"Host", "192.168.1.2:8288"}, http.StatusForbidden, "is not 127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, api.Config{Metrics: okHandler})
			for _, path := range []string{"/v1/events", "/v1/runs/run-1", "/metrics"} {
				a := do(t, http.MethodGet, b.url+path, nil, tt.headers...)
				if tt.status == http.StatusOK {
					if a.status != http.StatusOK {
						t.Errorf("GET %s: status = %d, body %s", path, a.status, a.body)
					}
					continue
				}
				wantError(t, a, tt.status, tt.want)
				wantError(t, a, tt.status, signing+" is not set")
				if tt.status == http.StatusUnauthorized && a.header.Get("WWW-Authenticate") == "" {
					t.Errorf("GET %s: a 401 without WWW-Authenticate", path)
				}
			}
			a := do(t, http.MethodPost, b.url+"/e/anykey", strings.NewReader(`{"name":"a/b"}`), tt.headers...)
			if tt.status == http.StatusOK {
				if a.status != http.StatusOK {
					t.Errorf("POST /e: status = %d, body %s", a.status, a.body)
				}
				return
			}
			wantIntakeError(t, a, tt.status, tt.want)
			wantIntakeError(t, a, tt.status, event+" is not set")
			if pub := b.eng.publishedEvents(); len(pub) != 0 {
				t.Errorf("published %v from a refused request", pub)
			}
		})
	}
}

// TestDevModeRefusesAPeerOnAnotherMachine: a peer that is not loopback is
// refused whatever its Host.
func TestDevModeRefusesAPeerOnAnotherMachine(t *testing.T) {
	t.Parallel()
	eng, st := newFakes()
	h := api.New(api.Config{}, eng, st, newTestLogger(t))
	for _, path := range []string{"/v1/events", "/e/anykey"} {
		method := http.MethodGet
		if strings.HasPrefix(path, "/e/") {
			method = http.MethodPost
		}
		req := httptest.NewRequest(method, "http://127.0.0.1:8288"+path, strings.NewReader(`{"name":"a/b"}`))
		req.RemoteAddr = "198.51.100.7:40000"
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), "came from 198.51.100.7:40000") {
			t.Errorf("%s %s from 198.51.100.7: %d %s", method, path, rec.Code, rec.Body)
		}
	}
}

// TestKeysWorkThroughAProxy: with keys set, a proxied request with the key is
// served; dev mode's local-only rule does not apply.
func TestKeysWorkThroughAProxy(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{EventKeys: []string{"ek"}, SigningKeys: []string{"sk"}, Metrics: okHandler})
	proxied := []string{"Host", "jobs.example.com", "X-Forwarded-For", "203.0.113.9", "Via", "1.1 caddy"}
	for _, path := range []string{"/v1/events", "/metrics"} {
		if a := do(t, http.MethodGet, b.url+path, nil, append(proxied, "Authorization", "Bearer sk")...); a.status != http.StatusOK {
			t.Errorf("GET %s with the key: %d %s", path, a.status, a.body)
		}
		wantError(t, do(t, http.MethodGet, b.url+path, nil, proxied...), http.StatusUnauthorized, "bearer signing key")
	}
	// With an event key, the key is the guard: curl's default form type
	// and a browser page that holds the key may send.
	a := do(t, http.MethodPost, b.url+"/e/ek", strings.NewReader(`{"name":"a/b"}`),
		append(proxied, "Content-Type", "application/x-www-form-urlencoded", "Origin", "https://example.com")...)
	if a.status != http.StatusOK {
		t.Errorf("POST /e/ek: %d %s", a.status, a.body)
	}
	wantIntakeError(t, do(t, http.MethodPost, b.url+"/e/other", strings.NewReader(`{"name":"a/b"}`), proxied...), http.StatusUnauthorized, "event key not found")
}

// TestCrossSiteWritesRefused: a write a web page on another site could make
// a browser send is refused, in dev mode on /e and always on /v1; the same
// write from a client (JSON, no foreign Origin) is served.
func TestCrossSiteWritesRefused(t *testing.T) {
	t.Parallel()
	writes := []struct {
		method, path, body string
	}{
		{http.MethodPost, "/v1/functions/hello-world/invoke", `{"data":{}}`},
		{http.MethodPost, "/v1/runs/run-1/rerun", ``},
		{http.MethodDelete, "/v1/runs/run-2", ``},
		{http.MethodPost, "/e/anykey", `{"name":"a/b"}`},
	}
	tests := []struct {
		name    string
		cfg     api.Config
		headers []string
		want    string // empty: served
	}{
		{"text/plain, as a form or no-cors fetch sends", api.Config{}, []string{"Content-Type", "text/plain"}, "needs Content-Type: application/json"},
		{"form type", api.Config{}, []string{"Content-Type", "application/x-www-form-urlencoded"}, "needs Content-Type: application/json"},
		{"no type", api.Config{}, []string{"Content-Type", ""}, "needs Content-Type: application/json"},
		{"JSON from another site", api.Config{}, []string{"Sec-Fetch-Site", "cross-site"}, "cross-site request refused"},
		{"JSON from a sibling site", api.Config{}, []string{"Sec-Fetch-Site", "same-site"}, "cross-site request refused"},
		{"JSON with a foreign Origin (older browser)", api.Config{}, []string{"Origin", "http://evil.example"}, "cross-site request refused"},
		{"JSON with a null Origin", api.Config{}, []string{"Origin", "null"}, "cross-site request refused"},
		{"JSON from a local dev server on another port", api.Config{}, []string{"Origin", "http://localhost:3000"}, "cross-site request refused"},
		{"JSON from a client", api.Config{}, nil, ""},
		{"JSON from this origin", api.Config{}, []string{"Sec-Fetch-Site", "same-origin"}, ""},
		{"a bearer header instead of JSON", api.Config{}, []string{"Content-Type", "text/plain", "Authorization", "Bearer x"}, ""},
		{"+json type", api.Config{}, []string{"Content-Type", "application/vnd.api+json; charset=utf-8"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.cfg)
			for _, wr := range writes {
				a := do(t, wr.method, b.url+wr.path, strings.NewReader(wr.body), tt.headers...)
				if tt.want == "" {
					if a.status >= 300 {
						t.Errorf("%s %s: status = %d, body %s", wr.method, wr.path, a.status, a.body)
					}
					continue
				}
				wantError(t, a, http.StatusForbidden, tt.want)
			}
			if tt.want == "" {
				return
			}
			b.eng.with(func(e *fakeEngine) {
				if len(e.invoked) != 0 || len(e.published) != 0 {
					t.Errorf("a refused request invoked %v, published %v", e.invoked, e.published)
				}
				if r := e.runs["run-2"]; r.Status != store.StatusSleeping {
					t.Errorf("run-2 is %s after a refused cancel", r.Status)
				}
			})
		})
	}

	t.Run("with keys, /v1 writes still refuse a foreign Origin", func(t *testing.T) {
		t.Parallel()
		b := setup(t, api.Config{SigningKeys: []string{"sk"}})
		a := do(t, http.MethodPost, b.url+"/v1/runs/run-1/rerun", nil, "Authorization", "Bearer sk", "Sec-Fetch-Site", "cross-site")
		wantError(t, a, http.StatusForbidden, "cross-site request refused")
		a = do(t, http.MethodPost, b.url+"/v1/runs/run-1/rerun", nil, "Authorization", "Bearer sk", "Content-Type", "")
		if a.status != http.StatusOK {
			t.Errorf("rerun with the bearer key and no body: %d %s", a.status, a.body)
		}
	})

	t.Run("reads and the site's routes are not writes of the API", func(t *testing.T) {
		t.Parallel()
		b := setup(t, api.Config{Routes: map[string]http.Handler{"POST /api/contact": okHandler}})
		if a := do(t, http.MethodGet, b.url+"/v1/events", nil, "Sec-Fetch-Site", "cross-site"); a.status != http.StatusOK {
			t.Errorf("GET /v1/events with Sec-Fetch-Site cross-site: %d %s", a.status, a.body)
		}
		a := do(t, http.MethodPost, b.url+"/api/contact", strings.NewReader(`{}`),
			"Content-Type", "text/plain", "Origin", "https://cyberdrew.dev", "Sec-Fetch-Site", "cross-site",
			"Host", "cyberdrew.dev", "X-Forwarded-For", "203.0.113.9")
		if a.status != http.StatusOK {
			t.Errorf("POST /api/contact from the site through a proxy: %d %s", a.status, a.body)
		}
	})
}

// TestDevModeLoggedOnce: New says which side is in dev mode, and what that
// means, once.
func TestDevModeLoggedOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  api.Config
		want []string
		not  []string
	}{
		{"no keys", api.Config{Metrics: okHandler},
			[]string{"INNGEST_EVENT_KEY is not set", "INNGEST_SIGNING_KEY is not set: the admin API (/v1 and /metrics)", "straight from this machine", "gets 401"}, nil},
		{"public metrics", api.Config{Metrics: okHandler, MetricsPublic: true, EventKeys: []string{"ek"}},
			[]string{"INNGEST_SIGNING_KEY is not set: the admin API (/v1) needs"}, []string{"INNGEST_EVENT_KEY"}},
		{"both keys", api.Config{EventKeys: []string{"ek"}, SigningKeys: []string{"sk"}}, nil, []string{"dev mode"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			eng, st := newFakes()
			h := api.New(tt.cfg, eng, st, slog.New(slog.NewTextHandler(&buf, nil)))
			before := buf.String()
			for range 3 {
				req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/v1/events", nil)
				req.Header.Set("X-Forwarded-For", "203.0.113.9")
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
			if buf.String() != before {
				t.Errorf("refused requests logged more:\n%s", strings.TrimPrefix(buf.String(), before))
			}
			for _, w := range tt.want {
				if !strings.Contains(before, w) {
					t.Errorf("log lacks %q:\n%s", w, before)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(before, w) {
					t.Errorf("log holds %q:\n%s", w, before)
				}
			}
		})
	}
}
