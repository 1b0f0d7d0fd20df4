package jobs_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// sent is one request the fake Resend API received.
type sent struct {
	Header http.Header
	Body   struct {
		From    string   `json:"from"`
		To      []string `json:"to"`
		ReplyTo string   `json:"reply_to"`
		Subject string   `json:"subject"`
		HTML    string   `json:"html"`
		Text    string   `json:"text"`
	}
}

// fakeResend stands in for api.resend.com: answer decides each reply
// (status, extra headers) from the request number (0-based) and the body.
type fakeResend struct {
	mu       sync.Mutex
	received []sent
	answer   func(n int, s sent) (int, map[string]string)
}

func (f *fakeResend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var s sent
	s.Header = r.Header.Clone()
	body, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(body, &s.Body)
	f.mu.Lock()
	n := len(f.received)
	f.received = append(f.received, s)
	f.mu.Unlock()
	status, headers := http.StatusOK, map[string]string(nil)
	if f.answer != nil {
		status, headers = f.answer(n, s)
	}
	for k, v := range headers {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if status == http.StatusOK {
		json.NewEncoder(w).Encode(map[string]string{"id": "msg-" + string(rune('a'+n))})
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"statusCode": status, "name": "error", "message": "failure " + http.StatusText(status)})
}

func (f *fakeResend) all() []sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sent(nil), f.received...)
}

// withResend points the mailer at a fake Resend API through the real client.
func withResend(t *testing.T, f *fakeResend) func(store.Store, *clockwork.FakeClock, *jobs.Deps) {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return func(_ store.Store, clock *clockwork.FakeClock, d *jobs.Deps) {
		m, err := jobs.NewResendMailer("re_test_key", srv.URL, nil, clock)
		if err != nil {
			t.Fatal(err)
		}
		d.Mailer = m
		d.Config.ContactTo = "owner@cyberdrew.dev"
	}
}

const submission = `{"name":"Eve\r\nBcc: victim@example.com","email":"eve@example.com","message":"Hi <script>alert(1)</script> & bye","submittedAt":"2025-03-12T10:29:00Z","ip":"203.0.113.9"}`

func TestContactFormSendsBothEmailsSafely(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		f := &fakeResend{}
		b := setup(t, be, withResend(t, f))
		id := b.send(t, jobs.EventContactSubmitted, submission, "contact-form-submitted")
		b.waitStatus(t, id, store.StatusCompleted)
		got := f.all()
		if len(got) != 2 {
			t.Fatalf("%d requests, want 2", len(got))
		}
		note, confirm := got[0], got[1]
		if note.Body.From != "contact@cyberdrew.dev" || strings.Join(note.Body.To, ",") != "owner@cyberdrew.dev" || note.Body.ReplyTo != "eve@example.com" {
			t.Errorf("notification addressing: %+v", note.Body)
		}
		if note.Body.Subject != "Contact form: Eve Bcc: victim@example.com" {
			t.Errorf("notification subject %q keeps CR/LF or is wrong", note.Body.Subject)
		}
		if strings.Contains(note.Body.HTML, "<script>") || !strings.Contains(note.Body.HTML, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; bye") {
			t.Errorf("HTML not escaped: %s", note.Body.HTML)
		}
		if !strings.Contains(note.Body.Text, "Hi <script>alert(1)</script> & bye") || !strings.Contains(note.Body.Text, "Submitted: 2025-03-12T10:29:00Z") {
			t.Errorf("text body: %s", note.Body.Text)
		}
		if strings.Join(confirm.Body.To, ",") != "eve@example.com" || confirm.Body.Subject != "Thanks for reaching out!" || !strings.Contains(confirm.Body.Text, "alert(1)") {
			t.Errorf("confirmation: %+v", confirm.Body)
		}
		if k := note.Header.Get("Idempotency-Key"); k != id+"/send-notification-email" {
			t.Errorf("idempotency key %q", k)
		}
		if k := confirm.Header.Get("Idempotency-Key"); k != id+"/send-confirmation-email" {
			t.Errorf("idempotency key %q", k)
		}
		if a := note.Header.Get("Authorization"); a != "Bearer re_test_key" {
			t.Errorf("authorization %q", a)
		}
		var outcomes []jobs.EmailOutcome
		for _, ev := range b.events(t, jobs.EventEmailSent) {
			var o jobs.EmailOutcome
			json.Unmarshal(ev.Data, &o)
			outcomes = append(outcomes, o)
		}
		sort.Slice(outcomes, func(i, j int) bool { return outcomes[i].Type > outcomes[j].Type })
		want := []jobs.EmailOutcome{{Email: "eve@example.com", Type: "notification", MessageID: "msg-a"}, {Email: "eve@example.com", Type: "confirmation", MessageID: "msg-b"}}
		if len(outcomes) != 2 || outcomes[0] != want[0] || outcomes[1] != want[1] {
			t.Errorf("sent events %+v, want %+v", outcomes, want)
		}
		// Each email Resend accepted is indexed to this run, for its
		// delivery webhooks.
		for msg, kind := range map[string]string{"msg-a": "notification", "msg-b": "confirmation"} {
			got, err := jobs.LookupSentEmail(b.ctx, b.st, jobs.Keys{}, msg)
			if err != nil || got != (jobs.SentEmail{RunID: id, Type: kind}) {
				t.Errorf("sent email %s indexed as %+v (%v), want run %s %s", msg, got, err, id, kind)
			}
		}
	})
}

func TestContactFormRetriesA500AndMailsOnce(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		f := &fakeResend{answer: func(n int, _ sent) (int, map[string]string) {
			if n == 0 {
				return http.StatusInternalServerError, nil
			}
			return http.StatusOK, nil
		}}
		b := setup(t, be, withResend(t, f))
		id := b.send(t, jobs.EventContactSubmitted, submission, "contact-form-submitted")
		b.waitFor(t, "the first attempt to fail", func() bool {
			s := b.steps(t, id)["send-notification-email"]
			return len(s.Attempts) == 1 && b.run(t, id).AvailableAt.Equal(s.WakeAt)
		})
		b.clock.Advance(15 * time.Second)
		b.waitStatus(t, id, store.StatusCompleted)
		got := f.all()
		if len(got) != 3 {
			t.Fatalf("%d requests, want 3 (a failure, then one of each email)", len(got))
		}
		if got[0].Header.Get("Idempotency-Key") != got[1].Header.Get("Idempotency-Key") {
			t.Errorf("the retry changed the idempotency key")
		}
		if n := len(b.steps(t, id)["send-notification-email"].Attempts); n != 2 {
			t.Errorf("%d attempts, want 2", n)
		}
		if n := len(b.events(t, jobs.EventEmailSent)); n != 2 {
			t.Errorf("%d delivered events, want 2", n)
		}
	})
}

func TestContactFormRejected422FailsAtOnceAndReportsIt(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		f := &fakeResend{answer: func(_ int, s sent) (int, map[string]string) {
			if s.Body.To[0] == "owner@cyberdrew.dev" {
				return http.StatusUnprocessableEntity, nil
			}
			return http.StatusOK, nil
		}}
		b := setup(t, be, withResend(t, f))
		id := b.send(t, jobs.EventContactSubmitted, submission, "contact-form-submitted")
		r := b.waitStatus(t, id, store.StatusFailed)
		s := b.steps(t, id)["send-notification-email"]
		if s.Status != store.StatusFailed || len(s.Attempts) != 1 {
			t.Errorf("notification step %s after %d attempts, want Failed after 1", s.Status, len(s.Attempts))
		}
		if !strings.Contains(r.Error, "422") {
			t.Errorf("run error %q", r.Error)
		}
		failed := b.events(t, jobs.EventEmailFailed)
		if len(failed) != 1 {
			t.Fatalf("%d failed events, want 1", len(failed))
		}
		var o jobs.EmailOutcome
		if json.Unmarshal(failed[0].Data, &o); o.Type != "notification" || o.Error == "" {
			t.Errorf("failed event %s", failed[0].Data)
		}
		if n := len(b.events(t, jobs.EventEmailSent)); n != 1 {
			t.Errorf("%d delivered events, want 1 (the confirmation)", n)
		}
	})
}

func TestContactFormWaitsOutResendRateLimit(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		f := &fakeResend{answer: func(n int, _ sent) (int, map[string]string) {
			if n == 0 {
				return http.StatusTooManyRequests, map[string]string{"Retry-After": "120"}
			}
			return http.StatusOK, nil
		}}
		b := setup(t, be, withResend(t, f))
		id := b.send(t, jobs.EventContactSubmitted, submission, "contact-form-submitted")
		var s store.Step
		b.waitFor(t, "the rate-limited attempt", func() bool {
			s = b.steps(t, id)["send-notification-email"]
			return len(s.Attempts) == 1 && !s.WakeAt.IsZero()
		})
		if d := s.WakeAt.Sub(s.Attempts[0].EndedAt); d != 120*time.Second {
			t.Fatalf("retry after %v, want Resend's 120s", d)
		}
		b.clock.Advance(120 * time.Second)
		b.waitStatus(t, id, store.StatusCompleted)
	})
}

func TestContactFormWithoutAPIKeyWritesTheOutbox(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, nil)
		id := b.send(t, jobs.EventContactSubmitted, submission, "contact-form-submitted")
		r := b.waitStatus(t, id, store.StatusCompleted)
		var out map[string]jobs.SendResult
		if err := json.Unmarshal(r.Output, &out); err != nil {
			t.Fatal(err)
		}
		note := out["notification"]
		if note.Sent || note.Outbox == "" || !strings.Contains(note.Note, "not delivered") {
			t.Fatalf("notification result %+v", note)
		}
		body, err := os.ReadFile(note.Outbox)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(body), "&lt;script&gt;") || strings.Contains(string(body), "\nBcc:") {
			t.Errorf("outbox file:\n%s", body)
		}
		if n := len(b.events(t, jobs.EventEmailSent)); n != 0 {
			t.Errorf("%d delivered events for undelivered mail", n)
		}
	})
}
