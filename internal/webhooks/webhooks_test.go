package webhooks_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/api"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
	"github.com/dcyfr/cyberdrew/internal/testkit"
	"github.com/dcyfr/cyberdrew/internal/webhooks"
)

var now = time.Date(2025, 3, 12, 10, 30, 0, 0, time.UTC)

const (
	resendSecret = "whsec_dW5pdC10ZXN0LXNpZ25pbmcta2V5"
	githubSecret = "unit-test-github-secret"
)

// counted records what the routes told the observer.
type counted struct {
	mu   sync.Mutex
	seen []string
}

func (c *counted) EmailDelivery(email, status string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, email+"/"+status)
}

func (c *counted) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seen)
}

type bundle struct {
	ctx context.Context
	st  store.Store
	url string
	obs *counted
	log *testkit.SyncBuffer
}

// setup serves the webhook routes, mounted on the api handler as the
// daemon mounts them, on loopback, publishing into a real engine on a
// fresh store on be.
func setup(t *testing.T, be backendtest.Backend, cfg webhooks.Config) *bundle {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	clock := clockwork.NewFakeClockAt(now)
	st, _ := be.Open(t, ctx, clock)
	eng, err := engine.New(engine.Options{Store: st, Clock: clock, Validate: jobs.Validate})
	if err != nil {
		t.Fatal(err)
	}
	b := &bundle{ctx: ctx, st: st, obs: &counted{}, log: &testkit.SyncBuffer{}}
	logger := slog.New(slog.NewJSONHandler(b.log, nil))
	hooks := webhooks.New(cfg, eng, st, b.obs, clock, logger)
	srv := httptest.NewServer(api.New(api.Config{Routes: hooks.Routes()}, eng, st, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	b.url = srv.URL
	return b
}

func (b *bundle) post(t *testing.T, path string, header http.Header, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("POST %s: %d %q is not JSON", path, res.StatusCode, raw)
	}
	return res.StatusCode, out
}

func (b *bundle) events(t *testing.T) []store.Event {
	t.Helper()
	page, err := b.st.ListEvents(b.ctx, store.EventFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return page.Items
}

// svix signs body as Svix does for Resend, at the real time (resend-go
// checks the timestamp against it).
func svix(msgID, body string) http.Header {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(resendSecret, "whsec_"))
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(msgID + "." + ts + "." + body))
	return http.Header{
		"Svix-Id": {msgID}, "Svix-Timestamp": {ts},
		"Svix-Signature": {"v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))},
	}
}

func report(typ, emailID string) string {
	return `{"type":"` + typ + `","created_at":"2025-03-12T10:40:00.000Z","data":{"email_id":"` + emailID + `","to":["someone@example.com"]}}`
}

func TestRoutesAreOffUntilTheirSecretIsSet(t *testing.T) {
	t.Parallel()
	b := setup(t, backendtest.Backends[0], webhooks.Config{})
	for _, r := range []struct{ path, env string }{{"/webhooks/resend", "RESEND_WEBHOOK_SECRET"}, {"/webhooks/github", "GITHUB_WEBHOOK_SECRET"}} {
		status, body := b.post(t, r.path, svix("msg_1", report("email.delivered", "em-1")), report("email.delivered", "em-1"))
		if msg, _ := body["error"].(string); status != http.StatusNotFound || !strings.Contains(msg, "set "+r.env) {
			t.Errorf("POST %s with its secret unset: %d %v, want 404 naming %s", r.path, status, body, r.env)
		}
		if !strings.Contains(b.log.String(), "webhook route off: set "+r.env+" to turn it on") {
			t.Errorf("the start-up log does not say %s is off:\n%s", r.path, b.log)
		}
	}
	if evs := b.events(t); len(evs) != 0 {
		t.Errorf("%d events stored by routes that are off", len(evs))
	}
}

// A bounce of the owner's notification is counted and logged at warn
// once; a replay of it, and a confirmation's bounce, log nothing; an
// email no contact run sent is ignored.
func TestOwnerNotificationBounceIsVisible(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, webhooks.Config{ResendSecret: resendSecret})
		for id, kind := range map[string]string{"em-note": jobs.EmailNotification, "em-conf": jobs.EmailConfirmation} {
			if err := jobs.RecordSentEmail(b.ctx, b.st, jobs.Keys{}, id, jobs.SentEmail{RunID: "run-1", Type: kind}); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range []struct {
			msgID, body string
			status      int
		}{
			{"msg_note_bounce", report("email.bounced", "em-note"), http.StatusOK},
			{"msg_note_bounce", report("email.bounced", "em-note"), http.StatusOK}, // a replay
			{"msg_conf_bounce", report("email.bounced", "em-conf"), http.StatusOK},
			{"msg_other", report("email.delivered", "em-sent-by-another-app"), http.StatusAccepted},
		} {
			if status, body := b.post(t, "/webhooks/resend", svix(p.msgID, p.body), p.body); status != p.status {
				t.Fatalf("%s: %d %v, want %d", p.msgID, status, body, p.status)
			}
		}
		if got, want := b.obs.all(), []string{"notification/bounced", "confirmation/bounced"}; !slices.Equal(got, want) {
			t.Errorf("counted %v, want %v", got, want)
		}
		var warns []string
		for line := range strings.SplitSeq(strings.TrimSpace(b.log.String()), "\n") {
			if strings.Contains(line, `"level":"WARN"`) {
				warns = append(warns, line)
			}
		}
		if len(warns) != 1 || !strings.Contains(warns[0], "notification bounced") || !strings.Contains(warns[0], `"run":"run-1"`) {
			t.Errorf("warn lines %q, want one about the notification's bounce", warns)
		}
		if evs := b.events(t); len(evs) != 2 {
			t.Errorf("%d events stored, want 2 (the replay is a duplicate, the other app's email ignored)", len(evs))
		}
		ds, err := jobs.LatestDeliveries(b.ctx, b.st, jobs.Keys{}, "run-1")
		if err != nil || len(ds) != 2 || ds[0].Email != "notification" || ds[0].Status != "bounced" || ds[1].Email != "confirmation" {
			t.Errorf("deliveries of run-1: %+v, %v", ds, err)
		}
	})
}

// The latest status of an email is the one Resend saw last, whatever
// order the reports arrive in.
func TestLatestDeliveryWinsOutOfOrder(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		ctx := context.Background()
		st, _ := be.Open(t, ctx, clockwork.NewFakeClockAt(now))
		keys := jobs.Keys{}
		for _, d := range []jobs.Delivery{
			{Email: "confirmation", Status: "complained", At: now.Add(3 * time.Minute), EventID: "e3"},
			{Email: "confirmation", Status: "delivered", At: now.Add(time.Minute), EventID: "e1"},
			{Email: "confirmation", Status: "delivery_delayed", At: now, EventID: "e0"},
		} {
			if err := jobs.RecordDelivery(ctx, st, keys, "run-9", d); err != nil {
				t.Fatal(err)
			}
		}
		ds, err := jobs.LatestDeliveries(ctx, st, keys, "run-9")
		if err != nil || len(ds) != 1 || ds[0].Status != "complained" || ds[0].EventID != "e3" {
			t.Errorf("latest of run-9: %+v, %v; want complained (e3)", ds, err)
		}
		if ds, err := jobs.LatestDeliveries(ctx, st, keys, "run-"); err != nil || len(ds) != 0 {
			t.Errorf("a run id that prefixes another's: %+v, %v; want none", ds, err)
		}
	})
}

func TestGitHubRefusals(t *testing.T) {
	t.Parallel()
	sign := func(secret, body string) string {
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(body))
		return "sha256=" + hex.EncodeToString(mac.Sum(nil))
	}
	const body = `{"ref":"refs/heads/main"}`
	tests := []struct {
		name      string
		cfg       webhooks.Config
		header    http.Header
		body      string
		status    int
		says      string
		refreshes int
	}{
		{"no signature", webhooks.Config{}, http.Header{"X-Github-Event": {"push"}, "X-Github-Delivery": {"d1"}}, body, 401, "X-Hub-Signature-256", 0},
		{"sha1 only", webhooks.Config{}, http.Header{"X-Hub-Signature": {"sha1=00"}, "X-Github-Event": {"push"}, "X-Github-Delivery": {"d1"}}, body, 401, "X-Hub-Signature-256", 0},
		{"not hex", webhooks.Config{}, http.Header{"X-Hub-Signature-256": {"sha256=zz"}, "X-Github-Event": {"push"}, "X-Github-Delivery": {"d1"}}, body, 401, "does not match", 0},
		{"another body", webhooks.Config{}, http.Header{"X-Hub-Signature-256": {sign(githubSecret, "{}")}, "X-Github-Event": {"push"}, "X-Github-Delivery": {"d1"}}, body, 401, "does not match", 0},
		{"no event", webhooks.Config{}, http.Header{"X-Hub-Signature-256": {sign(githubSecret, body)}, "X-Github-Delivery": {"d1"}}, body, 400, "X-GitHub-Event", 0},
		{"no delivery", webhooks.Config{}, http.Header{"X-Hub-Signature-256": {sign(githubSecret, body)}, "X-Github-Event": {"push"}}, body, 400, "X-GitHub-Delivery", 0},
		{"oversized", webhooks.Config{}, http.Header{"X-Hub-Signature-256": {sign(githubSecret, strings.Repeat("x", webhooks.MaxGitHubBody+1))}, "X-Github-Event": {"push"}, "X-Github-Delivery": {"d1"}}, strings.Repeat("x", webhooks.MaxGitHubBody+1), 413, "larger than", 0},
		{"no GITHUB_TOKEN", webhooks.Config{RefreshDisabled: "GITHUB_TOKEN is not set"}, http.Header{"X-Hub-Signature-256": {sign(githubSecret, body)}, "X-Github-Event": {"release"}, "X-Github-Delivery": {"d1"}}, body, 503, "GITHUB_TOKEN", 0},
		{"create", webhooks.Config{}, http.Header{"X-Hub-Signature-256": {sign(githubSecret, body)}, "X-Github-Event": {"create"}, "X-Github-Delivery": {"d1"}}, body, 202, "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.cfg.GitHubSecret = githubSecret
			b := setup(t, backendtest.Backends[0], tt.cfg)
			status, got := b.post(t, "/webhooks/github", tt.header, tt.body)
			if msg, _ := got["error"].(string); status != tt.status || !strings.Contains(msg, tt.says) {
				t.Errorf("%d %v, want %d naming %q", status, got, tt.status, tt.says)
			}
			evs := b.events(t)
			if len(evs) != tt.refreshes {
				t.Fatalf("%d events stored, want %d", len(evs), tt.refreshes)
			}
			if tt.refreshes > 0 && (evs[0].Name != jobs.EventGitHubRefresh || evs[0].ClientID != "d1" || string(evs[0].Data) != `{"manual":true,"force":true}`) {
				t.Errorf("stored %s %s %s, want github/data.refresh d1 forced", evs[0].Name, evs[0].ClientID, evs[0].Data)
			}
		})
	}
}
