package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/resend/resend-go/v2"

	"github.com/dcyfr/cyberdrew/internal/engine"
)

// Email is one message to send. Every field that reaches a header has CR
// and LF stripped before sending.
type Email struct {
	From    string
	To      []string
	ReplyTo string
	Subject string
	HTML    string
	Text    string
	// IdempotencyKey makes a repeated send of the same message a no-op at
	// the provider (derived from run and step).
	IdempotencyKey string
}

// SendResult is what a send step records.
type SendResult struct {
	// Sent is true only when the provider accepted the message. Whether it
	// was then delivered is what Resend's webhooks report later
	// (contact/email.delivered, .bounced, …), not this.
	Sent bool   `json:"sent"`
	ID   string `json:"id,omitempty"`
	// Outbox is the file the message was written to instead (no API key).
	Outbox string `json:"outbox,omitempty"`
	Note   string `json:"note,omitempty"`
}

// UnmarshalJSON reads a send step's record, also as releases before
// 2026-12-07 wrote it: "delivered" where "sent" is now (a run such a
// release left unfinished is resumed by this one with its sent emails
// recorded so).
func (r *SendResult) UnmarshalJSON(b []byte) error {
	type plain SendResult
	var v struct {
		plain
		Sent      *bool `json:"sent"` // shadows plain's, to tell it absent
		Delivered *bool `json:"delivered"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = SendResult(v.plain)
	switch {
	case v.Sent != nil:
		r.Sent = *v.Sent
	case v.Delivered != nil:
		r.Sent = *v.Delivered
	}
	return nil
}

// Mailer sends emails. Its errors are already classified for the engine:
// engine.NonRetriable for a rejected message, engine.RetryAt for a rate
// limit, plain errors for what a retry may cure.
type Mailer interface {
	Send(ctx context.Context, e Email) (SendResult, error)
}

// headerSafe strips CR and LF, so no value can start a new header.
func headerSafe(s string) string {
	return strings.NewReplacer("\r", "", "\n", "").Replace(s)
}

// clean returns e with every header value made safe.
func (e Email) clean() Email {
	e.From, e.ReplyTo, e.Subject = headerSafe(e.From), headerSafe(e.ReplyTo), headerSafe(e.Subject)
	to := make([]string, len(e.To))
	for i, t := range e.To {
		to[i] = headerSafe(t)
	}
	e.To = to
	e.IdempotencyKey = headerSafe(e.IdempotencyKey)
	return e
}

// idempotencyKey names one send: run and step.
func idempotencyKey(run *engine.Run, step string) string { return run.ID + "/" + step }

// ResendMailer sends through Resend's API with the official client.
type ResendMailer struct {
	client *resend.Client
	clock  clockwork.Clock
	key    string // kept out of every error
}

var _ Mailer = (*ResendMailer)(nil)

// NewResendMailer returns a mailer for apiKey. baseURL, when set, points the
// client at any Resend-compatible endpoint; httpClient nil uses one with a
// 30 s timeout.
func NewResendMailer(apiKey, baseURL string, httpClient *http.Client, clock clockwork.Clock) (*ResendMailer, error) {
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 30 * time.Second}
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	hc := *httpClient
	hc.Transport = captureTransport{base: transportOf(httpClient)}
	c := resend.NewCustomClient(&hc, apiKey)
	if baseURL != "" {
		u, err := url.Parse(baseURL)
		if err != nil || u.Host == "" {
			return nil, errors.New("resend: base URL must be an absolute http(s) URL")
		}
		if !strings.HasSuffix(u.Path, "/") {
			u.Path += "/"
		}
		c.BaseURL = u
	}
	return &ResendMailer{client: c, clock: clock, key: apiKey}, nil
}

// Send sends e; see Mailer for how errors are classified.
func (m *ResendMailer) Send(ctx context.Context, e Email) (SendResult, error) {
	e = e.clean()
	info := &responseInfo{}
	ctx = context.WithValue(ctx, responseInfoKey{}, info)
	resp, err := m.client.Emails.SendWithOptions(ctx, &resend.SendEmailRequest{
		From: e.From, To: e.To, ReplyTo: e.ReplyTo, Subject: e.Subject, Html: e.HTML, Text: e.Text,
	}, &resend.SendEmailOptions{IdempotencyKey: e.IdempotencyKey})
	if err == nil {
		return SendResult{Sent: true, ID: resp.Id}, nil
	}
	return SendResult{}, classifyHTTP("resend", info, redact(err, m.key), m.clock.Now())
}

// redact removes secret from err's message: an API that repeats the
// credential it was sent must not put it into run errors, events or logs.
// The error is flattened to its message, so nothing unwraps to the secret.
func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), secret, "[redacted]"))
}

// classifyHTTP turns an API call's failure into an engine error from the
// status the transport saw: 429 retries at the time the answer names, any
// other 4xx fails at once, 5xx and network errors retry with backoff.
func classifyHTTP(api string, info *responseInfo, err error, now time.Time) error {
	err = fmt.Errorf("%s: %w", api, err)
	switch {
	case info.status == http.StatusTooManyRequests:
		if d, ok := retryDelay(info.header); ok {
			return engine.RetryAt(err, now.Add(d))
		}
		return err
	case info.status >= 400 && info.status < 500:
		return engine.NonRetriable(fmt.Errorf("%w (status %d)", err, info.status))
	}
	return err
}

// retryDelay reads Retry-After (seconds or an HTTP date) or, failing that,
// a ratelimit-reset in seconds.
func retryDelay(h http.Header) (time.Duration, bool) {
	if v := h.Get("Retry-After"); v != "" {
		if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
			return time.Duration(s) * time.Second, true
		}
	}
	if v := h.Get("Ratelimit-Reset"); v != "" {
		if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
			return time.Duration(s) * time.Second, true
		}
	}
	return 0, false
}

// responseInfo is where captureTransport notes the status and headers of
// the answer to a request carrying it in its context.
type responseInfo struct {
	status int
	header http.Header
}

type responseInfoKey struct{}

// captureTransport records each answer's status for the request's caller,
// because the client libraries do not expose it with their errors.
type captureTransport struct{ base http.RoundTripper }

func (t captureTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil {
		if info, ok := req.Context().Value(responseInfoKey{}).(*responseInfo); ok {
			info.status, info.header = resp.StatusCode, resp.Header.Clone()
		}
	}
	return resp, err
}

func transportOf(c *http.Client) http.RoundTripper {
	if c != nil && c.Transport != nil {
		return c.Transport
	}
	return http.DefaultTransport
}

// Outbox is the dev mailer used without RESEND_API_KEY: each message is
// written to a file in Dir and nothing is delivered.
type Outbox struct{ Dir string }

var _ Mailer = Outbox{}

// Send writes e to <Dir>/<idempotency key>.eml (so a retried step rewrites
// the same file) and says it was not delivered.
func (o Outbox) Send(_ context.Context, e Email) (SendResult, error) {
	e = e.clean()
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return SendResult{}, fmt.Errorf("outbox: %w", err)
	}
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, e.IdempotencyKey)
	if name == "" {
		name = "message"
	}
	path := filepath.Join(o.Dir, name+".eml")
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\n", e.From, strings.Join(e.To, ", "))
	if e.ReplyTo != "" {
		fmt.Fprintf(&b, "Reply-To: %s\r\n", e.ReplyTo)
	}
	fmt.Fprintf(&b, "Subject: %s\r\nIdempotency-Key: %s\r\nMIME-Version: 1.0\r\n", mime.QEncoding.Encode("utf-8", e.Subject), e.IdempotencyKey)
	const boundary = "cyberdrew-outbox-boundary"
	fmt.Fprintf(&b, "Content-Type: multipart/alternative; boundary=%q\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n", boundary, e.Text)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/html; charset=utf-8\r\n\r\n%s\r\n--%s--\r\n", boundary, e.HTML, boundary)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return SendResult{}, fmt.Errorf("outbox: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return SendResult{}, fmt.Errorf("outbox: %w", err)
	}
	return SendResult{Outbox: path, Note: "RESEND_API_KEY is not set: written to the dev outbox, not delivered"}, nil
}

// postWebhook POSTs body as JSON to the milestone webhook, classifying
// failures as the mailer does. The URL is a secret and never logged.
func postWebhook(ctx context.Context, d Deps, body any) error {
	payload, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Config.MilestoneWebhook, bytes.NewReader(payload))
	if err != nil {
		return engine.NonRetriable(errors.New("webhook: invalid URL"))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.HTTP.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may hold a token
		}
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 300 {
		return nil
	}
	info := &responseInfo{status: resp.StatusCode, header: resp.Header}
	return classifyHTTP("webhook", info, fmt.Errorf("answered %s", resp.Status), d.Clock.Now())
}
