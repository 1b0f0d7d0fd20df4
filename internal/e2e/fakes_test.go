package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
)

// email is one message the fake Resend accepted for delivery.
type email struct {
	From           string   `json:"from"`
	To             []string `json:"to"`
	ReplyTo        string   `json:"reply_to"`
	Subject        string   `json:"subject"`
	Text           string   `json:"text"`
	HTML           string   `json:"html"`
	IdempotencyKey string   `json:"-"`
	// ID is the id the fake answered, as Resend's webhooks name the email.
	ID string `json:"-"`
}

// fakeResend stands in for the Resend API, which the real resend-go client
// calls: it accepts POST /emails with the configured key and, as Resend
// does, delivers a message once per Idempotency-Key (a repeat is answered
// with the first message's id and delivers nothing).
type fakeResend struct {
	url string

	mu        sync.Mutex
	delivered []email
	ids       map[string]string // message id by idempotency key
	refused   []string          // what it answered with an error, for the failure message
}

func newFakeResend(t *testing.T) *fakeResend {
	f := &fakeResend{ids: map[string]string{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *fakeResend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	body, _ := io.ReadAll(r.Body)
	var e email
	err := json.Unmarshal(body, &e)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/emails":
		f.refused = append(f.refused, r.Method+" "+r.URL.Path)
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"statusCode":404,"name":"not_found","message":"not found"}`)
		return
	case r.Header.Get("Authorization") != "Bearer "+resendKey:
		f.refused = append(f.refused, "a request without the API key")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"statusCode":401,"name":"missing_api_key","message":"Missing API key"}`)
		return
	case err != nil:
		f.refused = append(f.refused, "a body that is not JSON")
		w.WriteHeader(http.StatusUnprocessableEntity)
		io.WriteString(w, `{"statusCode":422,"name":"validation_error","message":"invalid body"}`)
		return
	}
	e.IdempotencyKey = r.Header.Get("Idempotency-Key")
	id, seen := f.ids[e.IdempotencyKey]
	if !seen || e.IdempotencyKey == "" {
		id = fmt.Sprintf("msg-%d", len(f.delivered)+1)
		e.ID = id
		f.delivered = append(f.delivered, e)
		if e.IdempotencyKey != "" {
			f.ids[e.IdempotencyKey] = id
		}
	}
	json.NewEncoder(w).Encode(map[string]string{"id": id})
}

// outbox is every message delivered so far, in order.
func (f *fakeResend) outbox() []email {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.delivered)
}

// to is the messages delivered to addr.
func (f *fakeResend) to(addr string) []email {
	var out []email
	for _, e := range f.outbox() {
		if slices.Contains(e.To, addr) {
			out = append(out, e)
		}
	}
	return out
}

// refusals is what the fake answered with an error.
func (f *fakeResend) refusals() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.refused)
}

// calendar is the contribution calendar the fake GitHub serves.
const calendar = `{"data":{"user":{"contributionsCollection":{"contributionCalendar":{"totalContributions":7,"weeks":[{"contributionDays":[{"date":"2025-03-10","contributionCount":2},{"date":"2025-03-11","contributionCount":5}]}]}}}}}`

// fakeGitHub stands in for GitHub's GraphQL API, which the real githubv4
// client calls: POST /graphql with the token answers the calendar.
type fakeGitHub struct {
	url string

	mu      sync.Mutex
	queries []string // the login asked for, per request
	refused []string
}

func newFakeGitHub(t *testing.T) *fakeGitHub {
	f := &fakeGitHub{}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *fakeGitHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Query     string         `json:"query"`
		Variables map[string]any `json:"variables"`
	}
	body, _ := io.ReadAll(r.Body)
	err := json.Unmarshal(body, &req)
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/graphql" || err != nil:
		f.refused = append(f.refused, r.Method+" "+r.URL.Path)
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"Not Found"}`)
		return
	case r.Header.Get("Authorization") != "Bearer "+githubKey:
		f.refused = append(f.refused, "a request without the token")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"message":"Bad credentials"}`)
		return
	}
	login, _ := req.Variables["login"].(string)
	f.queries = append(f.queries, login)
	io.WriteString(w, calendar)
}

// asked is the login of each query received, in order.
func (f *fakeGitHub) asked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.queries)
}
