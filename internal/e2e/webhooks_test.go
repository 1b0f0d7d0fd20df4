package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// svixHeaders signs body as Svix signs Resend's webhooks: HMAC-SHA256 of
// "msg_id.timestamp.body" keyed with the base64-decoded secret after
// whsec_, sent as "v1,<base64>". It is the test's own signer; the daemon
// checks with resend-go's Webhooks.Verify.
func svixHeaders(t *testing.T, secret, msgID string, at time.Time, body string) http.Header {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatalf("secret %q: %v", secret, err)
	}
	ts := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(msgID + "." + ts + "." + body))
	return http.Header{
		"Content-Type":   {"application/json"},
		"Svix-Id":        {msgID},
		"Svix-Timestamp": {ts},
		"Svix-Signature": {"v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))},
	}
}

// resendReport is a webhook body as Resend sends it for one email.
func resendReport(typ string, e email, at time.Time) string {
	data := map[string]any{
		"created_at": at.Format(time.RFC3339Nano), "email_id": e.ID, "from": e.From, "to": e.To, "subject": e.Subject,
	}
	if typ == "email.bounced" {
		data["bounce"] = map[string]string{"message": "The recipient's mailbox is full.", "subType": "MailboxFull", "type": "Transient"}
	}
	b, _ := json.Marshal(map[string]any{"type": typ, "created_at": at.Format(time.RFC3339Nano), "data": data})
	return string(b)
}

// postResend posts a signed Resend webhook, signed now: Svix's timestamp
// is checked against the real clock, whatever the daemon's.
func (d *deployment) postResend(t *testing.T, msgID, body string) reply {
	t.Helper()
	return d.do(t, http.MethodPost, "/webhooks/resend", svixHeaders(t, resendHookSecret, msgID, time.Now(), body), body)
}

// delivery is the data of a delivery event.
type delivery struct {
	Email     string `json:"email"`
	Type      string `json:"type"`
	MessageID string `json:"messageId"`
	RunID     string `json:"runId"`
	At        string `json:"at"`
	Error     string `json:"error"`
}

// TestResendDeliveryWebhooks sends the contact form as the site does, then
// has Resend report on the two emails: the confirmation delivered, the
// owner's notification bounced, then a spam complaint about the
// confirmation. Each report becomes one event linked to the contact run,
// which `runs show` and the run detail show with each email's latest
// status; a replay is a duplicate; every malformed report is refused with
// a 4xx and stores nothing.
func TestResendDeliveryWebhooks(t *testing.T) {
	t.Parallel()
	onBothAndAPartitionedCluster(t, func(t *testing.T, d *deployment) {
		f := forms[0]
		if r := visitorN(0).post(t, d, "/api/contact", "/contact", contactBody(f)); r.status != http.StatusOK {
			t.Fatalf("POST /api/contact: %d %s", r.status, r.body)
		}
		runID := d.awaitRuns(t, "contact-form-submitted", 1)[0].RunID
		notes, confirms := d.resend.to(owner), d.resend.to(f.Email)
		if len(notes) != 1 || len(confirms) != 1 {
			t.Fatalf("the fake Resend delivered %d notifications and %d confirmations, want 1 each", len(notes), len(confirms))
		}
		note, confirm := notes[0], confirms[0]

		reports := []struct {
			msgID, typ, event string
			mail              email
			kind              string
			at                time.Time
		}{
			{"msg_2mQ1delivered", "email.delivered", "contact/email.delivered", confirm, "confirmation", epoch.Add(time.Minute)},
			{"msg_2mQ2bounced", "email.bounced", "contact/email.bounced", note, "notification", epoch.Add(2 * time.Minute)},
			{"msg_2mQ3complained", "email.complained", "contact/email.complained", confirm, "confirmation", epoch.Add(3 * time.Minute)},
		}
		for _, rep := range reports {
			r := d.postResend(t, rep.msgID, resendReport(rep.typ, rep.mail, rep.at))
			if r.status != http.StatusOK {
				t.Fatalf("%s: %d %s", rep.typ, r.status, r.body)
			}
			evs := d.events(t, rep.event)
			if len(evs) != 1 {
				t.Fatalf("%s became %d %s events, want 1", rep.typ, len(evs), rep.event)
			}
			var got delivery
			if err := json.Unmarshal(evs[0].Data, &got); err != nil {
				t.Fatalf("%s data %s: %v", rep.event, evs[0].Data, err)
			}
			want := delivery{Email: rep.mail.To[0], Type: rep.kind, MessageID: rep.mail.ID, RunID: runID, At: rep.at.Format(time.RFC3339Nano)}
			if rep.typ == "email.bounced" {
				want.Error = "The recipient's mailbox is full."
			}
			if evs[0].ID != rep.msgID || got != want {
				t.Errorf("%s: event %s %+v, want id %s %+v", rep.typ, evs[0].ID, got, rep.msgID, want)
			}
		}

		before := len(d.events(t, ""))
		replay := d.postResend(t, reports[0].msgID, resendReport(reports[0].typ, confirm, reports[0].at))
		var dup struct {
			Duplicate bool `json:"duplicate"`
		}
		replay.decode(t, &dup)
		if replay.status != http.StatusOK || !dup.Duplicate {
			t.Errorf("a replay of %s: %d %s, want 200 and duplicate", reports[0].msgID, replay.status, replay.body)
		}

		// runs show: the latest status of each email.
		out := string(cyberdrew(t, d, "runs", "show", runID))
		for _, want := range [][]string{
			{"notification", "bounced", reports[1].at.Format(time.RFC3339), reports[1].msgID},
			{"confirmation", "complained", reports[2].at.Format(time.RFC3339), reports[2].msgID},
		} {
			if !hasRow(out, "DELIVERY", want) {
				t.Errorf("runs show %s has no delivery row %v:\n%s", runID, want, out)
			}
		}
		var detail struct {
			Data struct {
				Deliveries []struct {
					Email, Status string
				} `json:"deliveries"`
			} `json:"data"`
		}
		d.admin(t, http.MethodGet, "/v1/runs/"+runID, "", &detail)
		if ds := detail.Data.Deliveries; len(ds) != 2 || ds[0].Email != "notification" || ds[0].Status != "bounced" || ds[1].Status != "complained" {
			t.Errorf("GET /v1/runs/%s deliveries: %+v", runID, ds)
		}
		metrics := d.do(t, http.MethodGet, "/metrics", http.Header{"Authorization": {"Bearer " + signingKey}}, "")
		if want := `cyberdrew_email_delivery_total{email="notification",status="bounced"} 1`; !strings.Contains(string(metrics.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}

		good := resendReport("email.delivered", note, epoch.Add(4*time.Minute))
		otherSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("not-the-endpoint-secret"))
		stale := svixHeaders(t, resendHookSecret, "msg_stale", time.Now().Add(-10*time.Minute), good)
		huge := `{"type":"email.delivered","data":{"email_id":"` + note.ID + `","pad":"` + strings.Repeat("x", 300<<10) + `"}}`
		for _, bad := range []struct {
			name   string
			header http.Header
			body   string
			status int
			says   string
		}{
			{"wrong signature", svixHeaders(t, otherSecret, "msg_forged", time.Now(), good), good, http.StatusUnauthorized, "signature"},
			{"stale timestamp", stale, good, http.StatusBadRequest, "timestamp"},
			{"no signature", http.Header{"Content-Type": {"application/json"}}, good, http.StatusBadRequest, "svix-id"},
			{"unknown type", nil, resendReport("email.opened", note, epoch), http.StatusBadRequest, "email.opened"},
			{"oversized body", nil, huge, http.StatusRequestEntityTooLarge, "larger than"},
			{"bad JSON", nil, `{"type":"email.delivered",`, http.StatusBadRequest, "JSON"},
		} {
			h := bad.header
			if h == nil {
				h = svixHeaders(t, resendHookSecret, "msg_"+strings.ReplaceAll(bad.name, " ", "_"), time.Now(), bad.body)
			}
			r := d.do(t, http.MethodPost, "/webhooks/resend", h, bad.body)
			var e struct {
				Error string `json:"error"`
			}
			r.decode(t, &e)
			if r.status != bad.status || !strings.Contains(e.Error, bad.says) {
				t.Errorf("%s: %d %s, want %d naming %q", bad.name, r.status, r.body, bad.status, bad.says)
			}
		}
		if after := len(d.events(t, "")); after != before {
			t.Errorf("%d events before the replay and the bad reports, %d after: something was stored", before, after)
		}
		out = string(cyberdrew(t, d, "runs", "show", runID))
		if !hasRow(out, "DELIVERY", []string{"notification", "bounced"}) {
			t.Errorf("a refused report changed the notification's status:\n%s", out)
		}
	})
}

// hasRow reports whether the table under the header line starting with
// heading, in out, has a row starting with the fields of want.
func hasRow(out, heading string, want []string) bool {
	in := false
	for line := range strings.SplitSeq(out, "\n") {
		fields := strings.Fields(line)
		switch {
		case len(fields) > 0 && fields[0] == heading:
			in = true
		case len(fields) == 0:
			in = false
		case in && len(fields) >= len(want) && strings.Join(fields[:len(want)], " ") == strings.Join(want, " "):
			return true
		}
	}
	return false
}

// githubHeaders signs body as GitHub signs its webhooks.
func githubHeaders(secret, event, delivery, body string) http.Header {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	return http.Header{
		"Content-Type":        {"application/json"},
		"User-Agent":          {"GitHub-Hookshot/e2e"},
		"X-Github-Event":      {event},
		"X-Github-Delivery":   {delivery},
		"X-Hub-Signature-256": {"sha256=" + hex.EncodeToString(mac.Sum(nil))},
	}
}

// pushBody is a push payload, trimmed to what identifies it.
func pushBody(n int) string {
	return fmt.Sprintf(`{"ref":"refs/heads/main","after":"%040x","repository":{"full_name":"%s/site"},"pusher":{"name":"%s"}}`, n, githubUser, githubUser)
}

// TestGitHubPushWebhook has GitHub ping the new webhook, then deliver a
// push: it triggers one refresh, which asks GitHub once. A push with a
// wrong signature is refused and triggers nothing; a burst of three pushes
// becomes one more refresh.
func TestGitHubPushWebhook(t *testing.T) {
	t.Parallel()
	onBothAndAPartitionedCluster(t, func(t *testing.T, d *deployment) {
		post := func(h http.Header, body string) reply {
			return d.do(t, http.MethodPost, "/webhooks/github", h, body)
		}
		if r := post(githubHeaders(githubHookSecret, "ping", "d-ping", `{"zen":"Keep it logically awesome."}`), `{"zen":"Keep it logically awesome."}`); r.status != http.StatusOK {
			t.Fatalf("ping: %d %s", r.status, r.body)
		}
		if r := post(githubHeaders("wrong-secret", "push", "d-forged", pushBody(0)), pushBody(0)); r.status != http.StatusUnauthorized {
			t.Errorf("a push signed with another secret: %d %s, want 401", r.status, r.body)
		}
		if r := post(githubHeaders(githubHookSecret, "issues", "d-issue", `{"action":"opened"}`), `{"action":"opened"}`); r.status != http.StatusAccepted || !strings.Contains(string(r.body), "ignored") {
			t.Errorf("an issues event: %d %s, want 202 ignored", r.status, r.body)
		}
		if evs := d.events(t, ""); len(evs) != 0 {
			t.Fatalf("a ping, a forged push and an issues event stored %d events, want none", len(evs))
		}

		if r := post(githubHeaders(githubHookSecret, "push", "d-push-1", pushBody(1)), pushBody(1)); r.status != http.StatusAccepted {
			t.Fatalf("push: %d %s", r.status, r.body)
		}
		if runs := d.runs(t, "manual-refresh-github-data"); len(runs) != 1 {
			t.Fatalf("one push started %d refresh runs, want 1", len(runs))
		}
		d.clock.Advance(5 * time.Second) // the refresh's debounce period
		d.awaitRuns(t, "manual-refresh-github-data", 1)
		if asked := d.github.asked(); len(asked) != 1 {
			t.Fatalf("after one push GitHub was asked %v, want one query", asked)
		}
		if got := d.get(t, "github:contributions:"+githubUser); !strings.Contains(got, `"totalContributions":7`) {
			t.Errorf("the cache after the push: %q", got)
		}

		for n := 2; n <= 4; n++ {
			delivery := fmt.Sprintf("d-push-%d", n)
			if r := post(githubHeaders(githubHookSecret, "push", delivery, pushBody(n)), pushBody(n)); r.status != http.StatusAccepted {
				t.Fatalf("push %d: %d %s", n, r.status, r.body)
			}
		}
		redelivered := post(githubHeaders(githubHookSecret, "push", "d-push-4", pushBody(4)), pushBody(4))
		if !strings.Contains(string(redelivered.body), `"duplicate":true`) {
			t.Errorf("a redelivery of d-push-4: %d %s, want a duplicate", redelivered.status, redelivered.body)
		}
		if runs := d.runs(t, "manual-refresh-github-data"); len(runs) != 2 {
			t.Fatalf("a burst of three pushes left %d refresh runs in all, want 2 (one more, debounced)", len(runs))
		}
		d.clock.Advance(5 * time.Second)
		d.awaitRuns(t, "manual-refresh-github-data", 2)
		if asked := d.github.asked(); len(asked) != 2 {
			t.Errorf("after the burst GitHub was asked %d times in all, want 2", len(asked))
		}
		if evs := d.events(t, "github/data.refresh"); len(evs) != 4 {
			t.Errorf("%d github/data.refresh events, want 4 (one per push delivery)", len(evs))
		}
	})
}
