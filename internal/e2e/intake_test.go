package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// inngestVersion is the official inngest npm client whose request shape
// the tests copy (testdata/inngest-client pins the same version).
const inngestVersion = "inngest-js:v4.24.0"

// inngestSend is the request the official inngest client's send() makes
// for events, sent at now: always a JSON array, each event with its data
// and ts (now, in ms) and no id, with the client's headers and a fresh
// X-Inngest-Event-Id-Seed. It returns the header and the body, so a test
// can send the very same request twice, as the client does when it retries.
func inngestSend(now time.Time, events ...wireEvent) (http.Header, string) {
	entropy := make([]byte, 10)
	rand.Read(entropy)
	header := http.Header{
		"Content-Type":            {"application/json"},
		"User-Agent":              {inngestVersion},
		"X-Inngest-Sdk":           {inngestVersion},
		"X-Inngest-Sdk-Handled":   {"true"},
		"X-Inngest-Platform":      {"vercel"},
		"X-Inngest-Event-Id-Seed": {fmt.Sprintf("%d,%s", now.UnixMilli(), base64.StdEncoding.EncodeToString(entropy))},
	}
	for i := range events {
		events[i].TS = now.UnixMilli()
	}
	body, _ := json.Marshal(events)
	return header, string(body)
}

// wireEvent is an event as a client sends it: no id.
type wireEvent struct {
	Name string          `json:"name"`
	Data json.RawMessage `json:"data"`
	TS   int64           `json:"ts,omitempty"`
}

// serverFetch is what a server-side fetch (the site's Next.js route, or
// curl as the docs show) sends with one event object.
var serverFetch = http.Header{
	"Content-Type": {"application/json"},
	"User-Agent":   {"node"},
}

// TestContactThroughTheEventAPI sends the contact forms of different
// submitters through POST /e/{key} without ids: one event object per
// request as a server-side fetch sends it, then a batch as the official
// client sends it, then that same batch again as the client retries it.
// Each form gets its two emails, once.
func TestContactThroughTheEventAPI(t *testing.T) {
	t.Parallel()
	onBoth(t, func(t *testing.T, d *deployment) {
		at := d.clock.Now().UTC().Format(time.RFC3339)
		var ids []string
		for i, f := range forms[:3] {
			ev, _ := json.Marshal(wireEvent{Name: "contact/form.submitted", Data: json.RawMessage(submission(f, at, visitorN(i).ip))})
			got := d.intake(t, serverFetch, string(ev))
			if len(got) != 1 || got[0] == "" {
				t.Fatalf("one event answered ids %v", got)
			}
			ids = append(ids, got...)
		}
		var batch []wireEvent
		for i, f := range forms[3:] {
			batch = append(batch, wireEvent{Name: "contact/form.submitted", Data: json.RawMessage(submission(f, at, visitorN(3+i).ip))})
		}
		header, body := inngestSend(d.clock.Now(), batch...)
		got := d.intake(t, header, body)
		if len(got) != len(batch) {
			t.Fatalf("a batch of %d answered ids %v", len(batch), got)
		}
		ids = append(ids, got...)
		if retried := d.intake(t, header, body); !slices.Equal(retried, got) {
			t.Errorf("the client's retry of the same request answered ids %v, want the first answer's %v", retried, got)
		}
		if distinct := slices.Compact(slices.Sorted(slices.Values(ids))); len(distinct) != len(forms) {
			t.Errorf("ids %v are not %d distinct ids", ids, len(forms))
		}

		if runs := d.runs(t, "contact-form-submitted"); len(runs) != len(forms) {
			t.Fatalf("%d contact forms started %d runs, want %d", len(forms), len(runs), len(forms))
		}
		d.awaitRuns(t, "contact-form-submitted", len(forms))
		expectContactMail(t, d, forms)
		for _, id := range ids {
			var ev struct {
				Data event `json:"data"`
			}
			d.admin(t, http.MethodGet, "/v1/events/"+id, "", &ev)
			if ev.Data.ID == "" {
				t.Errorf("GET /v1/events/%s: the id is empty", id)
			}
		}
		d.everyEventHasAnID(t)
	})
}

// TestEverySiteEventThroughTheClient sends each of the site's events as the
// official client sends it, without ids, from two callers in a row, and
// checks what each started: two runs of its function (no event merges with
// another), but one refresh for a burst of github/data.refresh (debounced
// by design).
func TestEverySiteEventThroughTheClient(t *testing.T) {
	t.Parallel()
	today := epoch.Format(time.DateOnly)
	at := epoch.Format(time.RFC3339)
	callers := []struct {
		name string
		data func(caller int) string
		fn   string // "" when no function is triggered
		runs int
	}{
		{"test/hello.world", func(c int) string { return fmt.Sprintf(`{"email":"caller%d@example.com"}`, c) }, "hello-world", 2},
		{"contact/form.submitted", func(c int) string { return submission(forms[c], at, visitorN(c).ip) }, "contact-form-submitted", 2},
		{"contact/email.sent", func(c int) string {
			return fmt.Sprintf(`{"email":"caller%d@example.com","type":"confirmation","messageId":"m-%d"}`, c, c)
		}, "", 0},
		{"contact/email.failed", func(c int) string {
			return fmt.Sprintf(`{"email":"caller%d@example.com","type":"notification","error":"rejected"}`, c)
		}, "", 0},
		{"github/data.refresh", func(c int) string { return fmt.Sprintf(`{"manual":true,"force":%t}`, c == 1) }, "manual-refresh-github-data", 1},
		{"blog/post.viewed", func(c int) string {
			return fmt.Sprintf(`{"slug":"hello-world","title":"Hello, world","viewedAt":%q}`, at)
		}, "track-post-view", 2},
		{"blog/milestone.reached", func(c int) string {
			return fmt.Sprintf(`{"slug":"post-%d","title":"Post %d","milestone":100,"totalViews":100,"reachedAt":%q}`, c, c, at)
		}, "handle-milestone", 2},
		{"analytics/summary.generate", func(c int) string {
			return fmt.Sprintf(`{"period":"daily","startDate":%q,"endDate":%q}`, today, today)
		}, "generate-analytics-summary", 2},
	}
	onBoth(t, func(t *testing.T, d *deployment) {
		for _, ev := range callers {
			var ids []string
			for c := range 2 {
				header, body := inngestSend(d.clock.Now(), wireEvent{Name: ev.name, Data: json.RawMessage(ev.data(c))})
				got := d.intake(t, header, body)
				if len(got) != 1 {
					t.Fatalf("%s: ids %v", ev.name, got)
				}
				ids = append(ids, got[0])
			}
			// Each is stored as its own event, with an id of its own.
			var seen []string
			for _, id := range ids {
				var stored struct {
					Data event `json:"data"`
				}
				d.admin(t, http.MethodGet, "/v1/events/"+id, "", &stored)
				if stored.Data.Name != ev.name || stored.Data.ID == "" || slices.Contains(seen, stored.Data.ID) {
					t.Errorf("%s: GET /v1/events/%s: name %q id %q, want its own non-empty id", ev.name, id, stored.Data.Name, stored.Data.ID)
				}
				seen = append(seen, stored.Data.ID)
			}
		}
		for _, ev := range callers {
			if runs := d.runs(t, ev.fn); ev.fn != "" && len(runs) != ev.runs {
				t.Errorf("%s sent by two callers started %d runs of %s, want %d", ev.name, len(runs), ev.fn, ev.runs)
			}
		}
		// hello-world sleeps a second and the refresh waits out its
		// debounce, both on the daemon's clock: move it once both wait.
		d.waitFor(t, "both hello-world runs to sleep", func() bool {
			return len(d.runs(t, "hello-world", "Sleeping")) == 2
		})
		d.clock.Advance(5 * time.Second)
		for _, ev := range callers {
			if ev.fn != "" {
				d.awaitRuns(t, ev.fn, ev.runs)
			}
		}
		views := d.do(t, http.MethodGet, "/api/views/hello-world", visitorN(0).header("/blog/hello-world"), "")
		if !strings.Contains(string(views.body), `"total":2`) {
			t.Errorf("GET /api/views/hello-world after two views = %d %s", views.status, views.body)
		}
		if asked := d.github.asked(); len(asked) != 1 || asked[0] != githubUser {
			t.Errorf("GitHub was asked %v, want one query for %s", asked, githubUser)
		}
		d.everyEventHasAnID(t)
	})
}
