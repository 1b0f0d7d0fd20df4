package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

type healthBody struct {
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
	Store  string `json:"store,omitempty"`
}

// live answers the liveness probes: the process serves HTTP.
func (s *server) live(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, healthBody{Status: "ok"})
	return nil
}

// ready answers the readiness probe: the store took a write and answered a
// read (Ping) within ReadyTimeout. The answer comes within ReadyTimeout
// whatever the store does: a probe that has not returned by then is a 503.
func (s *server) ready(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
	defer cancel()
	kind := s.st.Kind()
	if err := s.probe.check(ctx); err != nil {
		if r.Context().Err() != nil {
			return nil // the client has gone
		}
		s.log.Warn("readiness: store probe failed", "store", kind, "err", err)
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, healthBody{
			Error: "store " + kind + ": " + err.Error(),
			Store: kind,
		})
		return nil
	}
	writeJSON(w, http.StatusOK, healthBody{Status: "ok", Store: kind})
	return nil
}

// prober runs the store's readiness probe, one at a time: a check that
// arrives while a probe is in flight waits for that probe's result instead
// of starting another, so a store that hangs holds one probe, not one per
// request.
type prober struct {
	ping    func(ctx context.Context) error
	timeout time.Duration

	mu       sync.Mutex
	inflight *probeCall // nil when no probe runs
}

// probeCall is one probe; err is set before done is closed.
type probeCall struct {
	done chan struct{}
	err  error
}

// check returns the result of the probe in flight, or of a new one, or an
// error once ctx ends first. The probe itself runs with its own timeout, so
// a caller that leaves does not cut it short for the others.
func (p *prober) check(ctx context.Context) error {
	p.mu.Lock()
	c := p.inflight
	if c == nil {
		c = &probeCall{done: make(chan struct{})}
		p.inflight = c
		go p.run(c)
	}
	p.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return fmt.Errorf("no answer within %s: %w", p.timeout, errProbeTimeout)
	}
}

var errProbeTimeout = errors.New("probe timed out")

func (p *prober) run(c *probeCall) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	c.err = p.ping(ctx)
	p.mu.Lock()
	p.inflight = nil
	p.mu.Unlock()
	close(c.done)
}
