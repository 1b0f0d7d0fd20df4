package api

import (
	"context"
	"net/http"
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

// ready answers the readiness probe: the store answers a ping in time.
func (s *server) ready(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
	defer cancel()
	kind := s.st.Kind()
	if err := s.st.Ping(ctx); err != nil {
		s.log.Warn("readiness: store ping failed", "store", kind, "err", err)
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
