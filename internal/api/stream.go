package api

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// Budget of one stream connection.
const (
	// streamRetryAfter is the Retry-After, in seconds, of a stream refused
	// because too many are open.
	streamRetryAfter = "5"
	// DefaultStreamStall is Config.StreamStall's default.
	DefaultStreamStall = 30 * time.Second
	// streamSocketBuffer is the kernel send buffer of a stream's
	// connection, in bytes (Linux doubles it for its bookkeeping). Left to
	// autotuning, a loopback or LAN connection grows it to 4 MB: a client
	// that stops reading would keep its handler writing, and the kernel
	// holding its changes, for thousands of events before the writes block.
	// Bounded, its writes block after a few hundred changes, and from then
	// on it costs one atomic load per batch until it reads again and gets a
	// resync, or Config.StreamStall drops it.
	streamSocketBuffer = 16 << 10
)

// stream is GET /v1/stream?run_id=&event_id=: the store's changes as
// server-sent events, "event: <kind>" with the Change as JSON data, and
// "event: resync" when the client fell behind and changes were lost. A
// ": keepalive" comment goes out every KeepAlive. The stream ends when the
// client goes away, when the server closes, or when the client has read
// nothing for StreamStall while changes waited for it. Past MaxStreams clients the answer is 503
// with Retry-After.
//
// Once its headers are out the stream takes the connection over (it
// hijacks it) and the handler returns: serveStream writes the clients'
// shared frames straight to the socket, and the body ends when the
// connection closes. So a connected client keeps none of the HTTP server's
// buffers and goroutines, only its own two parked goroutines, and the
// request's metrics see it end at the hand-over.
func (s *server) stream(w http.ResponseWriter, r *http.Request) error {
	runID, eventID := r.URL.Query().Get("run_id"), r.URL.Query().Get("event_id")
	// The stream outlives the request, so its context is not the request's.
	ctx, cancel := context.WithCancel(context.Background())
	sub, leave, err := s.streams.join(ctx)
	if err != nil {
		cancel()
		w.Header().Set("Retry-After", streamRetryAfter)
		return &httpError{status: http.StatusServiceUnavailable, msg: fmt.Sprintf("too many streams open (the limit is %d), retry later", s.cfg.MaxStreams)}
	}
	end := func() {
		cancel()
		leave()
	}
	f := streamFilter{runID: runID, eventID: eventID, runs: map[string]bool{}}
	if eventID != "" {
		// Runs the event created before the subscription started: their
		// later changes carry the run id only.
		p, err := s.st.ListRuns(r.Context(), store.RunFilter{EventID: eventID, Limit: maxLimit})
		if err != nil {
			end()
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
	h.Set("Connection", "close")
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		end()
		return &httpError{status: http.StatusHTTPVersionNotSupported, msg: "the stream needs an HTTP/1.1 connection"}
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.status = http.StatusOK
	}
	if err := boundSendBuffer(conn); err != nil {
		s.log.Error("stream: send buffer", "err", err)
	}
	if err := writeHead(buf.Writer, h); err != nil {
		conn.Close()
		end()
		return nil
	}
	go s.serveStream(ctx, cancel, conn, sub, f, end)
	return nil
}

// serveStream writes the stream to its hijacked connection until the
// client hangs up, the server closes, a write fails or blocks for
// StreamStall, or the relay ends; then it closes the connection and
// calls end.
func (s *server) serveStream(ctx context.Context, cancel context.CancelFunc, conn net.Conn, sub store.Subscription[*batch], f streamFilter, end func()) {
	defer end()
	defer conn.Close()
	// The server's shutdown does not see a hijacked connection: closing it
	// ends the stream, and a write blocked on it.
	defer context.AfterFunc(s.closing, func() {
		cancel()
		conn.Close()
	})()
	// An event-stream client sends nothing after its request: a parked
	// 1-byte read returns when it hangs up.
	go func() {
		var one [1]byte
		_, _ = conn.Read(one[:])
		cancel()
	}()
	tick := time.NewTicker(s.cfg.KeepAlive)
	defer tick.Stop()
	var bufs net.Buffers
	for {
		bufs = bufs[:0]
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			bufs = append(bufs, keepAliveFrame)
		case b, ok := <-sub.C:
			if !ok {
				return
			}
			bufs = f.append(bufs, b)
			// Take what else is queued: one write for the lot.
			for range len(sub.C) {
				bufs = f.append(bufs, <-sub.C)
			}
		}
		// A client that lost changes while it stalled and has now taken
		// all that is queued learns of it at once, not at the next change.
		if sub.CatchUp() {
			bufs = append(bufs, resyncFrame)
		}
		if err := writeFrames(conn, bufs, s.cfg.StreamStall); err != nil {
			// The client went away, or read nothing for too long; the
			// answer has started, so there is nothing to report to it.
			return
		}
	}
}

// The frames of the stream that are not changes.
var (
	connectedFrame = []byte(": connected\n\n")
	keepAliveFrame = []byte(": keepalive\n\n")
	resyncFrame    = []byte("event: resync\ndata: {}\n\n")
)

// writeHead writes the stream's status line, its headers and the connected
// comment through the hijacked connection's buffer, and flushes it; the
// buffer is not used again.
func writeHead(w *bufio.Writer, h http.Header) error {
	if _, err := w.WriteString("HTTP/1.1 200 OK\r\n"); err != nil {
		return err
	}
	if err := h.Write(w); err != nil {
		return err
	}
	if _, err := w.WriteString("\r\n"); err != nil {
		return err
	}
	if _, err := w.Write(connectedFrame); err != nil {
		return err
	}
	return w.Flush()
}

// boundSendBuffer bounds the kernel send buffer of a stream's connection
// (streamSocketBuffer) when it is a socket.
func boundSendBuffer(conn net.Conn) error {
	if c, ok := conn.(interface{ SetWriteBuffer(int) error }); ok {
		return c.SetWriteBuffer(streamSocketBuffer)
	}
	return nil
}

// writeFrames writes bufs to a stream's connection in one vectored write
// that may block for stall at most.
func writeFrames(conn net.Conn, bufs net.Buffers, stall time.Duration) error {
	if len(bufs) == 0 {
		return nil
	}
	if err := conn.SetWriteDeadline(time.Now().Add(stall)); err != nil {
		return err
	}
	_, err := bufs.WriteTo(conn)
	return err
}

// streamFilter applies the stream's filters. Filtering by event follows the
// event's runs: their creation names the event, their later changes only the
// run.
type streamFilter struct {
	runID, eventID string
	runs           map[string]bool
}

// append adds the frames of b the filter wants to bufs; a nil batch or a
// marker frame is a resync. An unfiltered client takes the batch whole.
func (f streamFilter) append(bufs net.Buffers, b *batch) net.Buffers {
	switch {
	case b == nil:
		return append(bufs, resyncFrame)
	case f.runID == "" && f.eventID == "":
		return append(bufs, b.data)
	}
	for _, fr := range b.frames {
		if fr.change.Kind == "" || f.wanted(fr.change) {
			bufs = append(bufs, fr.data)
		}
	}
	return bufs
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
