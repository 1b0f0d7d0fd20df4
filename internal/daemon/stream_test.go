package daemon_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// TestStuckStreamReaderDoesNotHoldIntake: a /v1/stream client that stops
// reading (issue #13) does not stop the intake or the runs: 400 events
// posted one per request from 16 clients are all acknowledged and all
// their ten-step runs complete while it reads nothing (5 600 changes, over
// a megabyte of frames, far more than the socket and the subscriber's
// queue hold). How much it slows them is the stream benchmark's figure. When it reads
// again it finds a resync for the changes it lost, and it is still
// connected: a later event's changes reach it.
func TestStuckStreamReaderDoesNotHoldIntake(t *testing.T) {
	t.Parallel()
	const events = 400
	cfg := testConfig(t.TempDir())
	// However slow this machine, the client is not dropped for its stall.
	cfg.StreamStall = time.Hour
	base := start(t, cfg, []engine.Function{{
		ID: "stream-load", Triggers: []engine.Trigger{{Event: "test/scale"}},
		Handler: func(ctx context.Context, r *engine.Run) (any, error) {
			// Ten steps: fourteen changes a run, so that what the client
			// does not read is far more than its buffers hold.
			for i := range 10 {
				if _, err := engine.Step(ctx, r, fmt.Sprint("step-", i), func(context.Context) (int, error) { return i, nil }); err != nil {
					return nil, err
				}
			}
			return nil, nil
		},
	}})
	stuck := openStuckStreams(t, base, 1)[0]
	defer stuck.Close()

	postEvents(t, base, events, 16)
	c := client{t: t, base: base}
	// The runs must not stop: the test fails when none completes for
	// stallGuard, however long the machine takes for all of them (a
	// loaded CI runner under -race is slow, not stuck).
	const stallGuard = 30 * time.Second
	last, progressed := -1, time.Now()
	for {
		completed := len(listRuns(c, "status=Completed"))
		if completed == events {
			break
		}
		if completed > last {
			last, progressed = completed, time.Now()
		} else if time.Since(progressed) > stallGuard {
			t.Fatalf("runs stopped at %d of %d completed, none for %v, while a stream client read nothing", completed, events, stallGuard)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The client reads again. It gets what its buffers held, and then,
	// since it lost changes, a resync; or, had the machine's buffers held
	// every change, all of them. Either way it is still connected: once it
	// has caught up, a new event's changes reach it. (An event sent before
	// it caught up may be among the changes the resync stands for.)
	stuck.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(stuck)
	resyncs, completed := 0, map[string]bool{}
	read := func(until func(store.Change) bool) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the stalled stream (%d resyncs, %d completions read): %v", resyncs, len(completed), err)
			}
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			var change store.Change
			if err := json.Unmarshal([]byte(data), &change); err != nil {
				t.Fatalf("stream data %q: %v", data, err)
			}
			if change.Kind == "" { // the resync marker's data is {}
				resyncs++
			}
			if change.Kind == store.ChangeRun && change.Status == store.StatusCompleted {
				completed[change.RunID] = true
			}
			if until(change) {
				return
			}
		}
	}
	read(func(store.Change) bool { return resyncs > 0 || len(completed) == events })
	if resyncs == 0 && len(completed) < events {
		t.Fatalf("the stream lost changes without a resync: %d of %d run completions read", len(completed), events)
	}
	if code := c.do(http.MethodPost, "/e/k", `{"name":"test/after-the-stall"}`, nil); code != http.StatusOK {
		t.Fatalf("post the last event: %d", code)
	}
	read(func(ch store.Change) bool { return ch.EventName == "test/after-the-stall" })
	t.Logf("the stalled client read %d of %d run completions and %d resyncs", len(completed), events, resyncs)
}

// openStuckStreams connects n /v1/stream subscribers that read their
// response headers and then never read again.
func openStuckStreams(t *testing.T, base string, n int) []net.Conn {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := stalledDialer.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("subscriber %d: %v", len(conns), err)
		}
		fmt.Fprintf(c, "GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
		status, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.Contains(status, " 200 ") {
			t.Fatalf("subscriber %d: %q %v", len(conns), status, err)
		}
		conns = append(conns, c)
	}
	return conns
}

// stalledDialer opens connections with a 4 KB receive buffer set before
// they open, so that the kernel cannot take much for a client that does
// not read.
var stalledDialer = net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	}); cerr != nil {
		return cerr
	}
	return err
}}

// postEvents posts n test/scale events, one per request, from workers
// keep-alive clients, and fails t on any answer but 200.
func postEvents(t *testing.T, base string, n, workers int) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				body := fmt.Sprintf(`{"name":"test/scale","data":{"i":%d}}`, i)
				res, err := client.Post(base+"/e/bench", "application/json", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				var buf bytes.Buffer
				buf.ReadFrom(res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("event %d: %d %s", i, res.StatusCode, buf.String())
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
