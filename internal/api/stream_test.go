package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/api"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// sse is one server-sent event, or a comment when name and data are empty.
type sse struct {
	name, data, comment string
}

// sseReader reads a text/event-stream one event or comment at a time.
type sseReader struct{ r *bufio.Reader }

func (s sseReader) next(t *testing.T) sse {
	t.Helper()
	var ev sse
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("read stream: %v (partial event %+v)", err, ev)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			return ev
		case strings.HasPrefix(line, ":"):
			ev.comment = strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, "event: "):
			ev.name = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[len("data: "):]
		default:
			t.Fatalf("unexpected stream line %q", line)
		}
	}
}

// nextEvent skips comments.
func (s sseReader) nextEvent(t *testing.T) sse {
	t.Helper()
	for {
		if ev := s.next(t); ev.name != "" {
			return ev
		}
	}
}

// openStream connects to the stream and returns its reader, the store's side
// of the subscription, and a function that hangs up.
func openStream(t *testing.T, b *bundle, query string) (sseReader, subscription, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.url+"/v1/stream"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hangUp := func() {
		cancel()
		resp.Body.Close()
	}
	t.Cleanup(hangUp)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream answered %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var sub subscription
	select {
	case sub = <-b.st.subscribers:
	case <-ctx.Done():
		t.Fatal("the stream did not subscribe")
	}
	r := sseReader{bufio.NewReader(resp.Body)}
	if first := r.next(t); first.comment != "connected" {
		t.Fatalf("first frame = %+v, want the connected comment", first)
	}
	return r, sub, hangUp
}

func TestStream(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{})
	r, sub, hangUp := openStream(t, b, "")

	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	sub.ch <- store.Change{Kind: store.ChangeEvent, EventID: "evt-a", EventName: "test/hello.world", At: at}
	sub.ch <- store.Change{Kind: store.ChangeRun, RunID: "run-1", FunctionID: "hello-world", Status: store.StatusRunning, At: at}
	sub.ch <- store.Change{}
	sub.ch <- store.Change{Kind: store.ChangeStep, RunID: "run-1", StepID: "wait-a-moment", Status: store.StatusSleeping, At: at}

	want := []sse{
		{name: "event", data: `{"kind":"event","event_id":"evt-a","event_name":"test/hello.world","at":"2025-03-01T12:00:00Z"}`},
		{name: "run", data: `{"kind":"run","run_id":"run-1","function_id":"hello-world","status":"Running","at":"2025-03-01T12:00:00Z"}`},
		{name: "resync", data: `{}`},
		{name: "step", data: `{"kind":"step","run_id":"run-1","status":"Sleeping","step_id":"wait-a-moment","at":"2025-03-01T12:00:00Z"}`},
	}
	for _, w := range want {
		got := r.nextEvent(t)
		if got.name != w.name || canonical(t, got.data) != canonical(t, w.data) {
			t.Errorf("event = %+v, want %+v", got, w)
		}
		var c store.Change
		if err := json.Unmarshal([]byte(got.data), &c); err != nil {
			t.Errorf("data %s is not a Change: %v", got.data, err)
		}
	}

	hangUp()
	select {
	case <-sub.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the stream kept its subscription after the client left")
	}
}

func TestStreamFilters(t *testing.T) {
	t.Parallel()
	changes := []store.Change{
		{Kind: store.ChangeEvent, EventID: "evt-b"},
		{Kind: store.ChangeRun, RunID: "run-3", EventID: "evt-b", Status: store.StatusQueued},
		{Kind: store.ChangeRun, RunID: "run-1", EventID: "evt-a", Status: store.StatusRunning},
		{},
		{Kind: store.ChangeStep, RunID: "run-3", StepID: "s"},
		{Kind: store.ChangeStep, RunID: "run-1", StepID: "wait-a-moment"},
		{Kind: store.ChangeEvent, EventID: "evt-a"},
	}
	tests := []struct {
		query string
		want  []string // event name and id of each expected frame
	}{
		{"?run_id=run-1", []string{"run run-1", "resync ", "step run-1"}},
		// The event filter follows the event's run to its later changes.
		{"?event_id=evt-a", []string{"run run-1", "resync ", "step run-1", "event evt-a"}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			t.Parallel()
			b := setup(t, api.Config{})
			r, sub, _ := openStream(t, b, tt.query)
			for _, c := range changes {
				sub.ch <- c
			}
			for _, w := range tt.want {
				ev := r.nextEvent(t)
				var c store.Change
				_ = json.Unmarshal([]byte(ev.data), &c)
				id := c.RunID
				if ev.name == "event" {
					id = c.EventID
				}
				if got := ev.name + " " + id; got != w {
					t.Errorf("frame %q, want %q", got, w)
				}
			}
		})
	}
}

func TestStreamKeepAlive(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{KeepAlive: 5 * time.Millisecond})
	r, _, _ := openStream(t, b, "")
	for range 2 {
		if ev := r.next(t); ev.comment != "keepalive" {
			t.Fatalf("frame = %+v, want a keepalive comment", ev)
		}
	}
}

// TestStreamCap: past MaxStreams subscribers the next one gets 503 with a
// JSON error and Retry-After; once the others leave, a subscriber gets in.
func TestStreamCap(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{MaxStreams: 2})
	_, sub, hangUpFirst := openStream(t, b, "")
	r2, err := http.Get(b.url + "/v1/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Body.Close()
	if first := (sseReader{bufio.NewReader(r2.Body)}).next(t); first.comment != "connected" {
		t.Fatalf("second subscriber's first frame = %+v", first)
	}

	a := do(t, http.MethodGet, b.url+"/v1/stream", nil)
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" {
		t.Fatalf("third subscriber: %d, Retry-After %q, want 503 with Retry-After", a.status, a.header.Get("Retry-After"))
	}
	if msg, _ := a.json(t)["error"].(string); !strings.Contains(msg, "too many streams") {
		t.Errorf("error = %q", msg)
	}

	hangUpFirst()
	r2.Body.Close()
	select {
	case <-sub.ctx.Done(): // the last subscriber left: the relay let go of the store
	case <-time.After(10 * time.Second):
		t.Fatal("the relay kept its store subscription after every subscriber left")
	}
	openStream(t, b, "")
}

// TestStreamDropsAStalledClient: a client that reads nothing while changes
// wait for it is dropped after StreamStall, and its place under MaxStreams
// is free again; the relay never waited for it.
func TestStreamDropsAStalledClient(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{MaxStreams: 1, StreamStall: 100 * time.Millisecond})
	conn := dialStalled(t, b.url)
	fmt.Fprintf(conn, "GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	var sub subscription
	select {
	case sub = <-b.st.subscribers:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not subscribe")
	}
	// Far more than the socket buffers hold: the stream's writes block.
	name := strings.Repeat("x", 1000)
	// Once the client is dropped the relay lets go of the store, and
	// nothing takes the rest.
publish:
	for i := range 5000 {
		select {
		case sub.ch <- store.Change{Kind: store.ChangeEvent, EventID: fmt.Sprint("evt-", i), EventName: name}:
		case <-sub.ctx.Done():
			break publish
		}
	}
	// Dropped, the client's place is free: a new client gets in.
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get(b.url + "/v1/stream")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled client still holds the only place: %d", res.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// And its connection was closed: once it reads what the buffers held,
	// it reaches the end.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("the stalled client's connection was not closed: %v", err)
	}
}

// TestStreamResyncsALaggedClient: a client that reads nothing while far
// more changes pass than its socket and its queue hold loses some, and the
// relay does not wait for it. When it reads again it finds a resync right
// after what was kept for it, and it is still connected: a later change
// reaches it.
func TestStreamResyncsALaggedClient(t *testing.T) {
	t.Parallel()
	b := setup(t, api.Config{StreamStall: time.Hour})
	conn := dialStalled(t, b.url)
	fmt.Fprintf(conn, "GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	var sub subscription
	select {
	case sub = <-b.st.subscribers:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not subscribe")
	}
	// 20 MB of changes: five times what the client's queue holds at most
	// (16 batches of 256) plus the bounded socket buffers.
	const changes = 20000
	name := strings.Repeat("x", 1000)
	for i := range changes {
		select {
		case sub.ch <- store.Change{Kind: store.ChangeEvent, EventID: fmt.Sprint("evt-", i), EventName: name}:
		case <-time.After(10 * time.Second):
			t.Fatalf("the relay stopped taking changes after %d: it waits for a client that does not read", i)
		}
	}

	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := sseReader{bufio.NewReader(conn)}
	if status, err := r.r.ReadString('\n'); err != nil || !strings.Contains(status, " 200 ") {
		t.Fatalf("status line %q: %v", status, err)
	}
	for { // the headers
		line, err := r.r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	delivered := 0
	for ev := r.nextEvent(t); ev.name != "resync"; ev = r.nextEvent(t) {
		delivered++
	}
	if delivered >= changes {
		t.Fatalf("all %d changes were delivered before the resync", delivered)
	}
	t.Logf("%d of %d changes delivered, then a resync", delivered, changes)
	sub.ch <- store.Change{Kind: store.ChangeEvent, EventID: "evt-after", EventName: "test/after-the-stall"}
	for ev := r.nextEvent(t); !strings.Contains(ev.data, `"evt-after"`); ev = r.nextEvent(t) {
		if ev.name == "resync" {
			t.Fatal("a second resync: the client lost changes while it read")
		}
	}
}

// dialStalled connects to the server at url with a 4 KB receive buffer set
// before the connection opens, so that the kernel cannot take much for a
// client that does not read.
func dialStalled(t *testing.T, url string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
