package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Change is one notification of the stream: an event stored, a run created
// or changed status, a step recorded. Kind "resync" means changes were lost.
type Change struct {
	Kind       string    `json:"kind"`
	EventID    string    `json:"event_id,omitempty"`
	EventName  string    `json:"event_name,omitempty"`
	RunID      string    `json:"run_id,omitempty"`
	FunctionID string    `json:"function_id,omitempty"`
	Status     string    `json:"status,omitempty"`
	StepID     string    `json:"step_id,omitempty"`
	At         time.Time `json:"at"`
}

// StreamFilter narrows the stream to one run, or to one event and the runs
// it triggers.
type StreamFilter struct {
	RunID   string
	EventID string
}

// Stream is an open /v1/stream: read Changes until it closes, then Err.
type Stream struct {
	changes chan Change
	err     error
	cancel  context.CancelFunc

	c      *Client
	filter StreamFilter
}

// Reopen opens the stream again with the same filter, after it ended (the
// daemon restarted). Changes committed between the two are not delivered:
// the caller reads the state again, as after a resync.
func (s *Stream) Reopen(ctx context.Context) (*Stream, error) {
	return s.c.Stream(ctx, s.filter)
}

// Changes delivers the changes in order; it is closed when the stream ends.
func (s *Stream) Changes() <-chan Change { return s.changes }

// Err is why the stream ended, once Changes is closed (nil after Close).
func (s *Stream) Err() error { return s.err }

// Close ends the stream.
func (s *Stream) Close() { s.cancel() }

// Stream opens /v1/stream. It returns once the daemon has subscribed, so
// every change committed after Stream returns is delivered.
func (c *Client) Stream(ctx context.Context, f StreamFilter) (*Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	q := url.Values{}
	set(q, "run_id", f.RunID)
	set(q, "event_id", f.EventID)
	req, err := c.request(ctx, AreaAdmin, http.MethodGet, "/v1/stream", q, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.send(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if err := c.check(req, AreaAdmin, resp); err != nil {
		resp.Body.Close()
		cancel()
		return nil, err
	}
	s := &Stream{changes: make(chan Change, 64), cancel: cancel, c: c, filter: f}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	// The daemon writes ": connected" once subscribed.
	if !sc.Scan() {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("client: stream: closed before it started: %v", sc.Err())
	}
	go func() {
		defer close(s.changes)
		defer resp.Body.Close()
		var kind, data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if kind == "" {
					continue
				}
				ch := Change{Kind: kind}
				if kind != "resync" {
					if err := json.Unmarshal([]byte(data), &ch); err != nil {
						s.err = fmt.Errorf("client: stream: %w", err)
						return
					}
				}
				kind, data = "", ""
				select {
				case s.changes <- ch:
				case <-ctx.Done():
					return
				}
			case strings.HasPrefix(line, "event:"):
				kind = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
			case strings.HasPrefix(line, "data:"):
				data += strings.TrimSpace(strings.TrimPrefix(line, "data:"))
			}
		}
		if ctx.Err() == nil {
			s.err = sc.Err()
			if s.err == nil {
				s.err = fmt.Errorf("client: stream closed by the daemon")
			}
		}
	}()
	return s, nil
}
