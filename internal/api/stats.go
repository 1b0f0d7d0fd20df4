package api

import (
	"context"
	"net/http"
	"time"

	"github.com/dcyfr/cyberdrew/internal/wire"
)

// Workers is the worker pool as GET /v1/stats reports it.
type Workers interface {
	// Busy is how many runs the pool is executing, Size its capacity.
	Busy() int
	Size() int
}

// GET /v1/stats: two store calls (ping, queue depth) whatever the number of
// runs; the rest is the engine's in-memory pulse.
func (s *server) stats(w http.ResponseWriter, r *http.Request) error {
	p := s.eng.Pulse()
	var v wire.Stats
	v.At = p.At.UTC()
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
	v.StartLag.P50Ms, v.StartLag.P99Ms, v.StartLag.Samples = ms(p.LagP50), ms(p.LagP99), p.LagSamples
	writeJSON(w, http.StatusOK, wire.Data[wire.Stats]{Data: v})
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
