// Package webhooks serves the two webhook routes of the site's public side
// (docs/site.md, "Webhooks"): POST /webhooks/resend turns Resend's delivery
// reports into contact/email.* events linked to the contact run that sent
// the email, and POST /webhooks/github turns a push (or a new branch, tag
// or release) into a debounced github/data.refresh. The signature is the
// authentication: no key of the admin or event API is asked for, and a
// route whose secret is unset answers 404 saying which variable turns it
// on. Every refusal is a 4xx JSON {"error": …} and stores nothing.
package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/wire"
)

// Body limits: Resend's reports are a few KiB; GitHub's push payloads
// carry up to 20 commits and can reach a few hundred KiB.
const (
	MaxResendBody = 256 << 10
	MaxGitHubBody = 1 << 20
)

// Publisher stores events and starts their runs: the engine.
type Publisher interface {
	Publish(ctx context.Context, evs []engine.IncomingEvent) ([]engine.Accepted, error)
}

// Observer counts the delivery statuses reported, for metrics.
type Observer interface {
	// EmailDelivery: one of the contact function's emails (notification,
	// confirmation) reached status (delivered, bounced, …).
	EmailDelivery(email, status string)
}

type nopObserver struct{}

func (nopObserver) EmailDelivery(string, string) {}

// Config configures the routes. An empty secret turns its route off.
type Config struct {
	// ResendSecret is the Resend webhook's signing secret (whsec_…).
	ResendSecret string
	// GitHubSecret is the GitHub webhook's secret.
	GitHubSecret string
	// RefreshDisabled says why no contributions refresh can run (no
	// GITHUB_TOKEN); empty when one can.
	RefreshDisabled string
	// Prefix is the data keys' prefix (CYBERDREW_SITE_PREFIX).
	Prefix string
}

// Server holds the routes' dependencies.
type Server struct {
	cfg   Config
	pub   Publisher
	kv    store.KV
	keys  jobs.Keys
	obs   Observer
	clock clockwork.Clock
	log   *slog.Logger
}

// New returns the webhook routes. obs nil counts nothing.
func New(cfg Config, pub Publisher, kv store.KV, obs Observer, clock clockwork.Clock, logger *slog.Logger) *Server {
	if obs == nil {
		obs = nopObserver{}
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, pub: pub, kv: kv, keys: jobs.Keys{Prefix: cfg.Prefix}, obs: obs, clock: clock, log: logger.With("component", "webhooks")}
	for _, r := range []struct {
		path, env string
		on        bool
	}{{"/webhooks/resend", "RESEND_WEBHOOK_SECRET", cfg.ResendSecret != ""}, {"/webhooks/github", "GITHUB_WEBHOOK_SECRET", cfg.GitHubSecret != ""}} {
		if r.on {
			s.log.Info("webhook route on", "route", "POST "+r.path)
		} else {
			s.log.Info("webhook route off: set "+r.env+" to turn it on", "route", "POST "+r.path)
		}
	}
	return s
}

// Routes returns the routes by ServeMux pattern.
func (s *Server) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"POST /webhooks/resend": s.handle(s.resend),
		"POST /webhooks/github": s.handle(s.github),
	}
}

// Deliveries is the latest delivery status of each of a run's emails, for
// the admin API's run detail; none for a run that sent no tracked email.
func (s *Server) Deliveries(ctx context.Context, runID string) ([]wire.Delivery, error) {
	ds, err := jobs.LatestDeliveries(ctx, s.kv, s.keys, runID)
	if err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	out := make([]wire.Delivery, len(ds))
	for i, d := range ds {
		out[i] = wire.Delivery{Email: d.Email, Status: d.Status, At: d.At, EventID: d.EventID}
	}
	return out, nil
}

// handlerFunc writes its answer, or returns an error for handle to render.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// refusal is a 4xx (or 503) with a message safe to show the sender.
type refusal struct {
	status int
	msg    string
}

func (e *refusal) Error() string { return e.msg }

func refuse(status int, format string, args ...any) error {
	return &refusal{status: status, msg: fmt.Sprintf(format, args...)}
}

// handle renders a handler's error as JSON: its refusal, 503 when the
// store is unavailable (the sender retries), 500 otherwise.
func (s *Server) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		var rf *refusal
		switch {
		case err == nil:
		case errors.As(err, &rf):
			writeJSON(w, rf.status, wire.Error{Error: rf.msg})
		case errors.Is(err, store.ErrUnavailable):
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusServiceUnavailable, wire.Error{Error: "the store is unavailable; retry later"})
		case r.Context().Err() != nil:
		default:
			s.log.Error("webhook failed", "route", r.Pattern, "err", err)
			writeJSON(w, http.StatusInternalServerError, wire.Error{Error: "internal server error"})
		}
	})
}

// readBody reads the raw body, at most limit bytes (413 beyond).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return nil, refuse(http.StatusRequestEntityTooLarge, "the body is larger than %d KiB", limit>>10)
	}
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "reading the body failed: %v", err)
	}
	return raw, nil
}

// publish stores one event; a malformed one is a 400.
func (s *Server) publish(ctx context.Context, ev engine.IncomingEvent) (engine.Accepted, error) {
	acc, err := s.pub.Publish(ctx, []engine.IncomingEvent{ev})
	var ve *engine.ValidationError
	switch {
	case errors.As(err, &ve):
		return engine.Accepted{}, refuse(http.StatusBadRequest, "%s", ve.Error())
	case err != nil:
		return engine.Accepted{}, fmt.Errorf("webhooks: publish %s: %w", ev.Name, err)
	}
	return acc[0], nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
