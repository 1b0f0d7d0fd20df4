package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// streamRetryAfter is the Retry-After, in seconds, of a stream refused
// because too many are open.
const streamRetryAfter = "5"

// stream is GET /v1/stream?run_id=&event_id=: the store's changes as
// server-sent events, "event: <kind>" with the Change as JSON data, and
// "event: resync" when the client fell behind and changes were lost. A
// ": keepalive" comment goes out every KeepAlive. The stream ends when the
// client goes away. Past MaxStreams clients the answer is 503 with
// Retry-After.
func (s *server) stream(w http.ResponseWriter, r *http.Request) error {
	runID, eventID := r.URL.Query().Get("run_id"), r.URL.Query().Get("event_id")
	rc := http.NewResponseController(w)
	// A server-wide write timeout must not cut the stream.
	if err := rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("api: stream: %w", err)
	}

	ctx := r.Context()
	frames, leave, err := s.streams.join(ctx)
	if err != nil {
		w.Header().Set("Retry-After", streamRetryAfter)
		return &httpError{status: http.StatusServiceUnavailable, msg: fmt.Sprintf("too many streams open (the limit is %d), retry later", s.cfg.MaxStreams)}
	}
	defer leave()
	f := streamFilter{runID: runID, eventID: eventID, runs: map[string]bool{}}
	if eventID != "" {
		// Runs the event created before the subscription started: their
		// later changes carry the run id only.
		p, err := s.st.ListRuns(ctx, store.RunFilter{EventID: eventID, Limit: maxLimit})
		if err != nil {
			return err
		}
		for _, run := range p.Items {
			f.runs[run.ID] = true
		}
	}

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, ": connected\n\n"); err != nil {
		return nil
	}
	if err := rc.Flush(); err != nil {
		s.log.Error("stream: flush", "err", err)
		return nil
	}

	tick := time.NewTicker(s.cfg.KeepAlive)
	defer tick.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-s.cfg.Closing:
			return nil
		case <-tick.C:
			_, err = fmt.Fprint(w, ": keepalive\n\n")
		case fr, ok := <-frames:
			if !ok {
				return nil
			}
			err = writeFrame(w, f, fr)
			// Take what else is queued: one flush for the lot.
			for range len(frames) {
				if err != nil {
					break
				}
				err = writeFrame(w, f, <-frames)
			}
		}
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			// The client went away or the connection broke; the answer
			// has started, so there is nothing to report to it.
			return nil
		}
	}
}

// resyncFrame tells a client that it missed changes and should re-read.
var resyncFrame = []byte("event: resync\ndata: {}\n\n")

// writeFrame writes fr when the filter wants it; a nil frame is a resync.
func writeFrame(w io.Writer, f streamFilter, fr *frame) error {
	if fr == nil {
		_, err := w.Write(resyncFrame)
		return err
	}
	if !f.wanted(fr.change) {
		return nil
	}
	_, err := w.Write(fr.data)
	return err
}

// streamFilter applies the stream's filters. Filtering by event follows the
// event's runs: their creation names the event, their later changes only the
// run.
type streamFilter struct {
	runID, eventID string
	runs           map[string]bool
}

// wanted reports whether c passes.
func (f streamFilter) wanted(c store.Change) bool {
	if f.runID != "" && c.RunID != f.runID {
		return false
	}
	if f.eventID == "" || c.EventID == f.eventID {
		if f.eventID != "" && c.RunID != "" {
			f.runs[c.RunID] = true
		}
		return true
	}
	return c.RunID != "" && f.runs[c.RunID]
}
