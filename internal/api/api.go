// Package api serves cyberdrew's HTTP surface: the Inngest-compatible event
// intake (POST /e/{eventKey}), the liveness and readiness probes, and the
// admin API under /v1 (events, runs, functions, live stats and a
// server-sent stream of changes) guarded by the bearer signing key.
//
// Every error answer is JSON {"error": "…"} with the matching HTTP status.
// The event API answers as Inngest's does, {"ids": […], "status": 200} or
// {"error": "…", "status": N}: the shape the official inngest npm client
// parses.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/wire"
)

// Defaults applied to the zero fields of Config.
const (
	DefaultMaxEventSize   = 256 << 10
	DefaultMaxRequestSize = 10 << 20
	DefaultMaxBatch       = 5000
	DefaultKeepAlive      = 15 * time.Second
	DefaultReadyTimeout   = 2 * time.Second
	DefaultIntakeTimeout  = 2 * time.Second
)

// Config tunes the HTTP surface. Zero fields take the defaults above.
type Config struct {
	// EventKeys guard intake: the path key must equal one of them. Empty
	// is dev mode: any key, but only from this machine (auth.go).
	EventKeys []string
	// SigningKeys are the admin API's bearer tokens: the primary key, then
	// any fallback kept during rotation. Empty is dev mode: no bearer, but
	// only from this machine (auth.go).
	SigningKeys []string
	// MaxEventSize bounds one event's JSON, MaxRequestSize a whole intake
	// body, in bytes; MaxBatch the number of events in one request.
	MaxEventSize   int64
	MaxRequestSize int64
	MaxBatch       int
	// KeepAlive is the interval of the stream's keep-alive comments.
	KeepAlive time.Duration
	// MaxStreams bounds the /v1/stream clients connected at once
	// (DefaultMaxStreams); past it a client gets 503 with Retry-After.
	MaxStreams int
	// StreamStall is how long one write to a /v1/stream client may block
	// (it reads nothing while changes wait for it) before the client is
	// dropped; DefaultStreamStall when zero.
	StreamStall time.Duration
	// ReadyTimeout bounds the store probe of /readyz.
	ReadyTimeout time.Duration
	// Clock is the engine's clock, against which intake checks the time
	// of a client's event id seed; nil means the real clock.
	Clock clockwork.Clock
	// IntakeTimeout bounds how long intake waits for the store: past it
	// the request gets a 503 saying the events may have been stored and a
	// resend with the same ids is safe.
	IntakeTimeout time.Duration
	// Closing, when closed, ends every open stream, so that the server can
	// shut down without waiting for its subscribers to leave.
	Closing <-chan struct{}
	// Routes are more handlers, by ServeMux pattern, served on the same mux
	// (the site's public routes): unknown paths and methods still get the
	// JSON 404 and 405.
	Routes map[string]http.Handler
	// Metrics, when set, is served on GET /metrics, behind the bearer
	// signing key unless MetricsPublic.
	Metrics       http.Handler
	MetricsPublic bool
	// Workers, when set, is the worker pool GET /v1/stats reports.
	Workers Workers
	// Deliveries, when set, adds the delivery status of a run's emails to
	// GET /v1/runs/{id}.
	Deliveries Deliveries
	// Observer is told of every request and of intake's verdicts; nil tells
	// nobody.
	Observer Observer
}

// Deliveries reads the latest delivery status of each email a run sent
// (internal/webhooks records them from Resend's reports).
type Deliveries interface {
	Deliveries(ctx context.Context, runID string) ([]wire.Delivery, error)
}

// Observer counts what the HTTP surface does, for metrics.
type Observer interface {
	// EventsAccepted: an intake request stored n events.
	EventsAccepted(n int)
	// EventsRejected: an intake request was refused for reason.
	EventsRejected(reason string)
	// Request: a request to route (its pattern, "unmatched" for none) was
	// answered with code.
	Request(route string, code int)
}

type nopObserver struct{}

func (nopObserver) EventsAccepted(int)    {}
func (nopObserver) EventsRejected(string) {}
func (nopObserver) Request(string, int)   {}

// Engine is what the HTTP surface asks of the durable engine.
type Engine interface {
	// Publish stores events and starts the runs they trigger. It returns one
	// Accepted per event in input order, a *engine.ValidationError for a
	// malformed known event, or an error wrapping store.ErrUnavailable.
	Publish(ctx context.Context, evs []engine.IncomingEvent) ([]engine.Accepted, error)
	// Invoke runs one function with data as its event's data
	// (engine.ErrUnknownFunction when no function has that id).
	Invoke(ctx context.Context, functionID string, data json.RawMessage) (engine.Accepted, error)
	// Rerun starts a new run of a run's function with the same trigger
	// (store.ErrNotFound).
	Rerun(ctx context.Context, runID string) (store.RunRef, error)
	// Cancel cancels an unfinished run (store.ErrNotFound, store.ErrFinished).
	Cancel(ctx context.Context, runID string) (store.Run, error)
	// Functions lists the registered functions.
	Functions() []engine.FunctionInfo
	// Pulse is this process's live counters (GET /v1/stats).
	Pulse() engine.Pulse
	// SeededIDs are the ids of a request's n events from an official
	// client's seed header (engine.Engine.SeededIDs), nil for none.
	SeededIDs(seed string, n int) []string
}

// Reader is the read side of the store the admin API and probes use.
type Reader interface {
	GetEvent(ctx context.Context, id string) (store.Event, error)
	EventByClientID(ctx context.Context, clientID string) (store.Event, error)
	ListEvents(ctx context.Context, f store.EventFilter) (store.Page[store.Event], error)
	GetRun(ctx context.Context, id string) (store.Run, error)
	ListRuns(ctx context.Context, f store.RunFilter) (store.Page[store.Run], error)
	Steps(ctx context.Context, runID string) ([]store.Step, error)
	Subscribe(ctx context.Context) <-chan store.Change
	QueueDepth(ctx context.Context) (int, error)
	Ping(ctx context.Context) error
	Kind() string
}

var _ Reader = store.Store(nil)

type server struct {
	cfg         Config
	eng         Engine
	st          Reader
	log         *slog.Logger
	mux         *http.ServeMux
	eventKeys   []keyDigest
	signingKeys []keyDigest
	probe       *prober
	crossOrigin *http.CrossOriginProtection
	streams     *relay
	// closing ends when cfg.Closing closes (never when it is nil).
	closing context.Context
}

// New returns the HTTP handler of the event API, the probes and the admin
// API. It logs a warning for each side in dev mode because its keys are
// unset.
func New(cfg Config, eng Engine, st Reader, logger *slog.Logger) http.Handler {
	if cfg.MaxEventSize <= 0 {
		cfg.MaxEventSize = DefaultMaxEventSize
	}
	if cfg.MaxRequestSize <= 0 {
		cfg.MaxRequestSize = DefaultMaxRequestSize
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.IntakeTimeout <= 0 {
		cfg.IntakeTimeout = DefaultIntakeTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.StreamStall <= 0 {
		cfg.StreamStall = DefaultStreamStall
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	log := logger.With("component", "api")
	s := &server{
		cfg:         cfg,
		eng:         eng,
		st:          st,
		log:         log,
		streams:     newRelay(st, cfg.MaxStreams, log),
		mux:         http.NewServeMux(),
		eventKeys:   digests(cfg.EventKeys),
		signingKeys: digests(cfg.SigningKeys),
		probe:       &prober{ping: st.Ping, timeout: cfg.ReadyTimeout},
		crossOrigin: http.NewCrossOriginProtection(),
	}
	s.closing = closingContext(cfg.Closing)
	s.logDevMode()
	s.routes()
	return s
}

// closingContext is a context that ends when closing closes, for the
// streams to hang their hijacked connections on; with no closing, one that
// never ends.
func closingContext(closing <-chan struct{}) context.Context {
	if closing == nil {
		return context.Background()
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-closing
		cancel()
	}()
	return ctx
}

func (s *server) routes() {
	for _, p := range []string{"POST /e", "POST /e/{$}", "POST /e/{eventKey}", "POST /e/{eventKey}/{$}"} {
		s.mux.Handle(p, s.handleInngest(s.events(s.intake)))
	}
	s.mux.Handle("GET /health", s.handle(s.live))
	s.mux.Handle("GET /healthz", s.handle(s.live))
	s.mux.Handle("GET /readyz", s.handle(s.ready))

	s.mux.Handle("GET /v1/events", s.admin(s.listEvents))
	s.mux.Handle("GET /v1/events/{id}", s.admin(s.getEvent))
	s.mux.Handle("GET /v1/events/{id}/runs", s.admin(s.eventRuns))
	s.mux.Handle("GET /v1/runs", s.admin(s.listRuns))
	s.mux.Handle("GET /v1/runs/{id}", s.admin(s.getRun))
	s.mux.Handle("DELETE /v1/runs/{id}", s.admin(s.cancelRun))
	s.mux.Handle("POST /v1/runs/{id}/rerun", s.admin(s.rerun))
	s.mux.Handle("GET /v1/functions", s.admin(s.listFunctions))
	s.mux.Handle("POST /v1/functions/{id}/invoke", s.admin(s.invoke))
	s.mux.Handle("GET /v1/stream", s.admin(s.stream))
	s.mux.Handle("GET /v1/stats", s.admin(s.stats))
	if m := s.cfg.Metrics; m != nil {
		serve := func(w http.ResponseWriter, r *http.Request) error { m.ServeHTTP(w, r); return nil }
		if s.cfg.MetricsPublic {
			s.mux.Handle("GET /metrics", s.handle(serve))
		} else {
			s.mux.Handle("GET /metrics", s.admin(serve))
		}
	}
	for pattern, h := range s.cfg.Routes {
		s.mux.Handle(pattern, h)
	}
}

// ServeHTTP routes the request; requests no route matches get the mux's 404
// or 405 (with its Allow header) as a JSON body.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	if !s.canonicalPath(r) {
		// The mux would redirect /v1/runs/../events to /v1/events; a path
		// with dot segments, empty segments or encoded slashes (but in a
		// trailing wildcard's value) is refused.
		writeJSON(sw, http.StatusBadRequest, wire.Error{Error: "malformed path"})
		s.cfg.Observer.Request("malformed", sw.code())
		return
	}
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		h.ServeHTTP(&jsonErrorWriter{ResponseWriter: sw}, r)
		s.cfg.Observer.Request("unmatched", sw.code())
		return
	}
	s.mux.ServeHTTP(sw, r)
	code := sw.code()
	if sw.status == 0 && r.Context().Err() != nil {
		// The client went away before any answer: neither the 200 an
		// unwritten answer defaults to, nor an error of the daemon's.
		code = statusClientClosed
	}
	s.cfg.Observer.Request(pattern, code)
}

// statusClientClosed is the code counted for a request whose client went
// away before it was answered (nginx's 499).
const statusClientClosed = 499

// canonicalPath reports whether the request's path is already clean: no
// "." or ".." segment, no empty segment, no encoded "\\" or ".", and no
// encoded "/" but inside the value of the route's trailing wildcard
// (GET /api/views/{slug...}): a site whose page asks for
// encodeURIComponent(slug) sends a slug "2024/hello" as 2024%2Fhello,
// which names the same post as 2024/hello.
func (s *server) canonicalPath(r *http.Request) bool {
	p := r.URL.Path
	if p == "" || p[0] != '/' || strings.Contains(p, "//") || strings.ContainsRune(p, 0) {
		return false
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	raw := strings.ToLower(r.URL.RawPath)
	if strings.Contains(raw, "%5c") || strings.Contains(raw, "%2e") {
		return false
	}
	slash := strings.Index(raw, "%2f")
	if slash < 0 {
		return true
	}
	_, route := s.mux.Handler(r)
	if i := strings.IndexByte(route, ' '); i >= 0 {
		route = route[i+1:] // after the method
	}
	wildcard := strings.LastIndexByte(route, '{')
	return wildcard >= 0 && strings.HasSuffix(route, "...}") && slash >= wildcard
}

// statusWriter remembers the status code of the answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (the stream
// flushes through it).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// jsonErrorWriter turns the mux's plain-text error answers into JSON ones.
type jsonErrorWriter struct {
	http.ResponseWriter
	replaced bool
}

func (w *jsonErrorWriter) WriteHeader(code int) {
	if code < 400 {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.replaced = true
	msg := "no such route"
	if code == http.StatusMethodNotAllowed {
		msg = "method not allowed"
	}
	w.Header().Del("X-Content-Type-Options")
	writeJSON(w.ResponseWriter, code, wire.Error{Error: msg})
}

func (w *jsonErrorWriter) Write(p []byte) (int, error) {
	if w.replaced {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// handlerFunc is a route: it writes its success answer itself and returns
// any failure for handle to render.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle renders a route's failure as {"error": "…"}.
func (s *server) handle(fn handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			if status, msg, ok := s.classify(w, r, err); ok {
				writeJSON(w, status, wire.Error{Error: msg})
			}
		}
	})
}

// handleInngest renders a route's failure as Inngest's event API does,
// {"error": "…", "status": N}.
func (s *server) handleInngest(fn handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			if ue, ok := errors.AsType[*unconfirmedError](err); ok {
				s.cfg.Observer.EventsRejected(rejection(http.StatusServiceUnavailable))
				ue.write(w)
				return
			}
			status, msg, ok := s.classify(w, r, err)
			s.cfg.Observer.EventsRejected(rejection(status))
			if ok {
				writeJSON(w, status, wire.Error{Error: msg, Status: status})
			}
		}
	})
}

// RejectionReasons are every reason rejection gives, one status of each.
var RejectionReasons = []string{
	rejection(http.StatusUnauthorized), rejection(http.StatusBadRequest), rejection(http.StatusRequestEntityTooLarge),
	rejection(http.StatusServiceUnavailable), rejection(0), rejection(http.StatusInternalServerError),
}

// rejection names the reason of an intake refusal from its status.
func rejection(status int) string {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return "auth"
	case http.StatusBadRequest:
		return "invalid"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case 0:
		return "client_gone"
	default:
		return "internal"
	}
}

// httpError is a failure with its own status and a message safe to show.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(msg string) error {
	return &httpError{status: http.StatusBadRequest, msg: msg}
}

// invalidDetail is what a store.ErrInvalid error says about the request,
// without the layers that wrapped it ("sqlite: list runs: invalid request:
// malformed cursor" says "malformed cursor").
func invalidDetail(err error) string {
	msg := err.Error()
	marker := store.ErrInvalid.Error() + ": "
	if i := strings.LastIndex(msg, marker); i >= 0 && i+len(marker) < len(msg) {
		return msg[i+len(marker):]
	}
	return msg // the detail comes before the sentinel, or there is none
}

// classify maps err to its status and a message safe to show: the route's
// own httpError, a validation failure, the store's and the engine's
// sentinels, and 500 for anything else (logged, not shown). ok is false when
// the client has gone away and nobody reads the answer.
func (s *server) classify(w http.ResponseWriter, r *http.Request, err error) (status int, msg string, ok bool) {
	var (
		he *httpError
		ve *engine.ValidationError
		de *engine.DisabledError
	)
	switch {
	case errors.As(err, &he):
		return he.status, he.msg, true
	case errors.As(err, &ve):
		return http.StatusBadRequest, ve.Error(), true
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, "not found", true
	case errors.Is(err, engine.ErrUnknownFunction):
		return http.StatusNotFound, "unknown function", true
	case errors.As(err, &de):
		return http.StatusConflict, de.Error(), true
	case errors.Is(err, store.ErrFinished):
		return http.StatusConflict, "run already finished", true
	case errors.Is(err, store.ErrInvalid):
		return http.StatusBadRequest, invalidDetail(err), true
	case errors.Is(err, store.ErrUnavailable):
		s.log.Warn("store unavailable", "route", r.Pattern, "err", err)
		w.Header().Set("Retry-After", "1")
		return http.StatusServiceUnavailable, "store unavailable, retry later", true
	case r.Context().Err() != nil:
		return 0, "", false
	default:
		s.log.Error("request failed", "route", r.Pattern, "err", err)
		return http.StatusInternalServerError, "internal error", true
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
