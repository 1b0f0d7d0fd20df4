//go:build streambench

package daemon_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStreamBudget measures what /v1/stream subscribers that never read cost
// the event intake (issue #13): a `cyberdrew serve` child on SQLite per row,
// 0, 100 and 1 000 subscribers connected over raw TCP that read their headers
// and then nothing, and 16 keep-alive clients posting one event per request.
// Each event starts a run, so every event fans out several changes. It prints
// the rates and the child's RSS as ratios against the row without
// subscribers, measured in the same run; it asserts only that every event was
// acknowledged, the figures are for docs/BENCHMARKS.md.
//
//	go test -tags streambench -run TestStreamBudget -v ./internal/daemon/
func TestStreamBudget(t *testing.T) {
	const events = 6000
	type row struct {
		subscribers     int
		rate            float64
		idleKB, afterKB int
	}
	var rows []row
	for _, n := range []int{0, 100, 1000} {
		child := spawnServe(t, t.TempDir(), "scale", "--stream-max-subscribers", "2000", "--workers", "8")
		pid := child.cmd.Process.Pid
		idle := rssKB(t, pid)
		conns := openStuckStreams(t, child.base, n)
		start := time.Now()
		postEvents(t, child.base, events, 16)
		rate := float64(events) / time.Since(start).Seconds()
		rows = append(rows, row{n, rate, idle, rssKB(t, pid)})
		for _, c := range conns {
			c.Close()
		}
		child.cmd.Process.Kill()
		child.cmd.Wait()
	}
	base := rows[0]
	t.Logf("| subscribers | intake events/s | vs none | RSS idle | RSS after | above idle |")
	t.Logf("|---|---|---|---|---|---|")
	for _, r := range rows {
		t.Logf("| %d | %.0f | %.2f× | %.1f MB | %.1f MB | %.1f MB |", r.subscribers, r.rate, r.rate/base.rate,
			float64(r.idleKB)/1024, float64(r.afterKB)/1024, float64(r.afterKB-r.idleKB)/1024)
	}
}

// openStuckStreams connects n /v1/stream subscribers that read their
// response headers and then never read again.
func openStuckStreams(t *testing.T, base string, n int) []net.Conn {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("subscriber %d: %v", len(conns), err)
		}
		c.(*net.TCPConn).SetReadBuffer(4096)
		fmt.Fprintf(c, "GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
		status, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.Contains(status, " 200 ") {
			t.Fatalf("subscriber %d: %q %v", len(conns), status, err)
		}
		conns = append(conns, c)
	}
	return conns
}

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

// rssKB reads a process's resident set from /proc.
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(raw)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	t.Fatalf("no VmRSS for %d", pid)
	return 0
}
