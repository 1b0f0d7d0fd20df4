// Package client is a typed Go client of the cyberdrew daemon's HTTP API:
// the event API (POST /e/{key}), the admin API under /v1 (events, runs,
// functions, the server-sent stream) and the site's public reads. Every
// command of the cyberdrew CLI but serve talks to the daemon through it.
package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dcyfr/cyberdrew/internal/wire"
)

// DefaultURL is the daemon's default address.
const DefaultURL = "http://127.0.0.1:8288"

// Client calls one daemon.
type Client struct {
	base     *url.URL
	eventKey string
	token    string
	http     *http.Client
}

// Options configure a Client.
type Options struct {
	// URL is the daemon's base URL; empty means DefaultURL.
	URL string
	// EventKey is the event API's key (INNGEST_EVENT_KEY); empty sends
	// "dev", which a daemon without event keys accepts.
	EventKey string
	// Token is the admin API's bearer signing key (INNGEST_SIGNING_KEY).
	Token string
	// HTTP is the transport; nil means a client without a global timeout
	// (streams are long), each call bounded by its context, whose answer
	// must start (its status line and headers) within HeaderTimeout.
	HTTP *http.Client
	// HeaderTimeout bounds the wait for an answer to start when HTTP is
	// nil; 0 means DefaultHeaderTimeout. A server that takes the
	// connection and never answers (a wrong --server, a frozen proxy) is
	// then an *UnreachableError, not a hang. Streams are not cut: the
	// daemon answers them at once and then keeps them open.
	HeaderTimeout time.Duration
}

// DefaultHeaderTimeout is how long a call waits for the daemon's answer to
// start. The daemon answers within its intake timeout (2 s by default) or
// at once; 30 s leaves room for a slow link.
const DefaultHeaderTimeout = 30 * time.Second

// New checks the URL and returns a client.
func New(opts Options) (*Client, error) {
	raw := opts.URL
	if raw == "" {
		raw = DefaultURL
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: server URL %q: want http://host:port or https://host", raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	hc := opts.HTTP
	if hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = cmp.Or(opts.HeaderTimeout, DefaultHeaderTimeout)
		hc = &http.Client{Transport: t}
	}
	return &Client{base: u, eventKey: opts.EventKey, token: opts.Token, http: hc}, nil
}

// URL is the daemon's base URL.
func (c *Client) URL() string { return c.base.String() }

// UnreachableError is a daemon that did not answer: refused, unknown host,
// timed out before any answer.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the daemon at %s: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Area names the side of the API a request went to, for error messages that
// say which key is missing.
type Area string

// Areas.
const (
	AreaEvents Area = "event API"
	AreaAdmin  Area = "admin API"
	AreaSite   Area = "site API"
)

// APIError is an error answer of the daemon: its status and message.
type APIError struct {
	Status  int
	Message string
	Method  string
	Path    string
	Area    Area
	Server  string // the client's base URL
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), e.Message)
}

// RefusedKey names the key the daemon refused with a 401 and what sets it
// on the command line: the event key for the event API, the signing key
// elsewhere. ok is false for any other error.
func (e *APIError) RefusedKey() (key, setting string, ok bool) {
	switch {
	case e.Status != http.StatusUnauthorized:
		return "", "", false
	case e.Area == AreaEvents:
		return "event key", "INNGEST_EVENT_KEY (or --event-key)", true
	default:
		return "signing key", "INNGEST_SIGNING_KEY (or --token)", true
	}
}

// IsStatus reports whether err is an APIError with that status.
func IsStatus(err error, status int) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == status
}

// do sends one request and decodes a 2xx JSON answer into out (nil: drop).
func (c *Client) do(ctx context.Context, area Area, method, path string, query url.Values, body any, out any) error {
	req, err := c.request(ctx, area, method, path, query, body)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := c.check(req, area, resp); err != nil {
		return err
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) request(ctx context.Context, area Area, method, path string, query url.Values, body any) (*http.Request, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("client: encode body: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if body != nil || method != http.MethodGet {
		// A write says it is JSON even without a body (cancel, rerun): a
		// daemon in dev mode refuses a write without it as cross-site.
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if area == AreaAdmin && c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if t, ok := c.http.Transport.(*http.Transport); ok && t.ResponseHeaderTimeout > 0 && strings.Contains(err.Error(), "timeout awaiting response headers") {
			err = fmt.Errorf("it took the connection but did not answer within %s", t.ResponseHeaderTimeout)
		}
		return nil, &UnreachableError{URL: c.URL(), Err: err}
	}
	return resp, nil
}

// NotDaemonError is an answer that did not come from a cyberdrew daemon: a
// --server that points at another web server, or through a proxy that
// answered itself. The daemon answers every error in JSON.
type NotDaemonError struct {
	URL         string
	Status      int
	ContentType string
}

func (e *NotDaemonError) Error() string {
	ct := e.ContentType
	if ct == "" {
		ct = "no content type"
	}
	return fmt.Sprintf("the server at %s answered %d %s with %s, where the daemon answers in JSON: it is not a cyberdrew daemon, "+
		"or a proxy in front of it answered itself", e.URL, e.Status, http.StatusText(e.Status), ct)
}

// check turns a non-2xx answer into an *APIError with the server's message,
// or a *NotDaemonError when it is not the daemon's JSON.
func (c *Client) check(req *http.Request, area Area, resp *http.Response) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			// A reverse proxy in front of a daemon that is down.
			return &UnreachableError{URL: c.URL(), Err: fmt.Errorf("a proxy in front of it answered %d %s",
				resp.StatusCode, http.StatusText(resp.StatusCode))}
		}
		return &NotDaemonError{URL: c.URL(), Status: resp.StatusCode, ContentType: ct}
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb wire.Error
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &APIError{Status: resp.StatusCode, Message: msg, Method: req.Method, Path: req.URL.Path, Area: area, Server: c.URL()}
}

// Ready asks /readyz; nil when the daemon and its store are ready.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, AreaSite, http.MethodGet, "/readyz", nil, nil, nil)
}

// Event is an event to send, Inngest's payload.
type Event struct {
	Name string          `json:"name"`
	Data json.RawMessage `json:"data,omitempty"`
	User json.RawMessage `json:"user,omitempty"`
	ID   string          `json:"id,omitempty"`
	TS   int64           `json:"ts,omitempty"`
}

// Send posts events to the event API and returns their ids in order.
func (c *Client) Send(ctx context.Context, events ...Event) ([]string, error) {
	out, err := c.SendAll(ctx, events...)
	return out.IDs, err
}

// SendAll sends events as Send does and returns the whole answer: their
// ids, and which of them were duplicates of events sent before with the
// same id (Sent.Duplicates).
func (c *Client) SendAll(ctx context.Context, events ...Event) (wire.Sent, error) {
	key := c.eventKey
	if key == "" {
		key = "dev"
	}
	var out wire.Sent
	if err := c.do(ctx, AreaEvents, http.MethodPost, "/e/"+url.PathEscape(key), nil, events, &out); err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			ae.Path = "/e/…" // never show the key
		}
		return wire.Sent{}, err
	}
	return out, nil
}

// The admin API's answers, in the shapes of package wire.
type (
	// StoredEvent is an event as the admin API shows it.
	StoredEvent = wire.Event
	// Run is a run as the admin API shows it.
	Run = wire.Run
	// RunDetail is a run with its steps.
	RunDetail = wire.RunDetail
	// Delivery is the latest delivery status of one email a run sent.
	Delivery = wire.Delivery
	// Step is one step of a run.
	Step = wire.Step
	// Attempt is one try of a step.
	Attempt = wire.Attempt
	// RunRef names a run just created.
	RunRef = wire.RunRef
	// Trigger is what starts a function.
	Trigger = wire.Trigger
	// Function is a registered function.
	Function = wire.Function
	// FunctionStats are a function's recent counters.
	FunctionStats = wire.FunctionStats
	// Invocation is what an invoke created.
	Invocation = wire.Invocation
	// Stats are the daemon's live counters.
	Stats = wire.Stats
)

// Page is one page of a listing; Cursor is empty on the last one.
type Page[T any] = wire.Page[T]

// Finished reports whether a run status is final.
func Finished(status string) bool { return wire.Finished(status) }

// EventFilter selects events.
type EventFilter struct {
	Name         string
	Since, Until time.Time
	Limit        int
	Cursor       string
}

func (f EventFilter) query() url.Values {
	q := url.Values{}
	set(q, "name", f.Name)
	window(q, f.Since, f.Until, f.Limit, f.Cursor)
	return q
}

// RunFilter selects runs.
type RunFilter struct {
	Function     string
	Statuses     []string
	EventID      string
	Since, Until time.Time
	Limit        int
	Cursor       string
}

func (f RunFilter) query() url.Values {
	q := url.Values{}
	set(q, "function", f.Function)
	set(q, "status", strings.Join(f.Statuses, ","))
	set(q, "event_id", f.EventID)
	window(q, f.Since, f.Until, f.Limit, f.Cursor)
	return q
}

func set(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

func window(q url.Values, since, until time.Time, limit int, cursor string) {
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if !until.IsZero() {
		q.Set("until", until.UTC().Format(time.RFC3339Nano))
	}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	set(q, "cursor", cursor)
}

// Events lists events, newest first.
func (c *Client) Events(ctx context.Context, f EventFilter) (Page[StoredEvent], error) {
	var p Page[StoredEvent]
	err := c.do(ctx, AreaAdmin, http.MethodGet, "/v1/events", f.query(), nil, &p)
	return p, err
}

// Event reads one event by its internal id.
func (c *Client) Event(ctx context.Context, id string) (StoredEvent, error) {
	var d wire.Data[StoredEvent]
	err := c.do(ctx, AreaAdmin, http.MethodGet, "/v1/events/"+url.PathEscape(id), nil, nil, &d)
	return d.Data, err
}

// EventRuns lists the runs an event triggered.
func (c *Client) EventRuns(ctx context.Context, id string) ([]Run, error) {
	var d wire.Data[[]Run]
	err := c.do(ctx, AreaAdmin, http.MethodGet, "/v1/events/"+url.PathEscape(id)+"/runs", nil, nil, &d)
	return d.Data, err
}

// Runs lists runs, newest first.
func (c *Client) Runs(ctx context.Context, f RunFilter) (Page[Run], error) {
	var p Page[Run]
	err := c.do(ctx, AreaAdmin, http.MethodGet, "/v1/runs", f.query(), nil, &p)
	return p, err
}

// Run reads a run with its steps.
func (c *Client) Run(ctx context.Context, id string) (RunDetail, error) {
	var d wire.Data[RunDetail]
	err := c.do(ctx, AreaAdmin, http.MethodGet, "/v1/runs/"+url.PathEscape(id), nil, nil, &d)
	return d.Data, err
}

// Cancel cancels an unfinished run (409 when it has finished).
func (c *Client) Cancel(ctx context.Context, id string) (Run, error) {
	var d wire.Data[Run]
	err := c.do(ctx, AreaAdmin, http.MethodDelete, "/v1/runs/"+url.PathEscape(id), nil, nil, &d)
	return d.Data, err
}

// Rerun starts the run's function again with the same event.
func (c *Client) Rerun(ctx context.Context, id string) (RunRef, error) {
	var d wire.Data[RunRef]
	err := c.do(ctx, AreaAdmin, http.MethodPost, "/v1/runs/"+url.PathEscape(id)+"/rerun", nil, nil, &d)
	return d.Data, err
}

// Functions lists the registered functions.
func (c *Client) Functions(ctx context.Context) ([]Function, error) {
	var d wire.Data[[]Function]
	err := c.do(ctx, AreaAdmin, http.MethodGet, "/v1/functions", nil, nil, &d)
	return d.Data, err
}

// Invoke runs a function now with data as its event's data (nil: {}).
func (c *Client) Invoke(ctx context.Context, functionID string, data json.RawMessage) (Invocation, error) {
	var body any
	if len(data) > 0 {
		body = map[string]json.RawMessage{"data": data}
	}
	var d wire.Data[Invocation]
	err := c.do(ctx, AreaAdmin, http.MethodPost, "/v1/functions/"+url.PathEscape(functionID)+"/invoke", nil, body, &d)
	return d.Data, err
}

// Get reads a JSON answer of any route (the site's public reads) into out.
func (c *Client) Get(ctx context.Context, path string, query url.Values, out any) error {
	return c.do(ctx, AreaSite, http.MethodGet, path, query, nil, out)
}

// Stats reads the daemon's live counters.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var d wire.Data[Stats]
	err := c.do(ctx, AreaAdmin, http.MethodGet, "/v1/stats", nil, nil, &d)
	return d.Data, err
}
