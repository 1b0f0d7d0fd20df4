package api

import (
	"context"
	"net/http"
	"time"
)

// Workers is the worker pool as GET /v1/stats reports it.
type Workers interface {
	// Busy is how many runs the pool is executing, Size its capacity.
	Busy() int
	Size() int
}

// statsView is GET /v1/stats: this daemon's live counters. Everything but
// the store's health and queue depth comes from memory; in a multi-daemon
// Redis setup the counters are this daemon's alone, the queue the shared one.
type statsView struct {
	At    jsonTime `json:"at"`
	Store struct {
		Kind    string `json:"kind"`
		Healthy bool   `json:"healthy"`
		Error   string `json:"error,omitempty"`
	} `json:"store"`
	// QueueDepth is null when the store is down.
	QueueDepth *int `json:"queue_depth"`
	Workers    struct {
		Busy int `json:"busy"`
		Size int `json:"size"`
	} `json:"workers"`
	// WindowSeconds is the length of the per-second series, oldest first,
	// ending at At's second.
	WindowSeconds int   `json:"window_seconds"`
	Finished      []int `json:"finished_per_second"`
	Failed        []int `json:"failed_per_second"`
	Lag           struct {
		P50Ms   float64 `json:"p50_ms"`
		P99Ms   float64 `json:"p99_ms"`
		Samples int     `json:"samples"`
	} `json:"start_lag"`
}

// GET /v1/stats: two store calls (ping, queue depth) whatever the number of
// runs; the rest is the engine's in-memory pulse.
func (s *server) stats(w http.ResponseWriter, r *http.Request) error {
	p := s.eng.Pulse()
	var v statsView
	v.At = jsonTime(p.At)
	v.Store.Kind = s.st.Kind()
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
	defer cancel()
	if err := s.probe.check(ctx); err != nil {
		v.Store.Error = err.Error()
	} else if n, err := s.st.QueueDepth(ctx); err != nil {
		v.Store.Error = err.Error()
	} else {
		v.Store.Healthy, v.QueueDepth = true, &n
	}
	if wk := s.cfg.Workers; wk != nil {
		v.Workers.Busy, v.Workers.Size = wk.Busy(), wk.Size()
	}
	v.WindowSeconds = len(p.Finished)
	v.Finished, v.Failed = p.Finished, p.Failed
	v.Lag.P50Ms, v.Lag.P99Ms, v.Lag.Samples = ms(p.LagP50), ms(p.LagP99), p.LagSamples
	writeJSON(w, http.StatusOK, data{Data: v})
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
