//go:build streambench

package daemon_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
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
	const (
		events = 15000
		rounds = 5
	)
	type row struct {
		subscribers                  int
		rate                         float64
		idleKB, connectedKB, afterKB int
	}
	counts := []int{0, 100, 1000}
	// Rows interleave, round after round, so that a change in what else
	// the machine is doing weighs on every row alike; each row's figures
	// are the median of its rounds.
	measured := make([][]row, len(counts))
	for range rounds {
		for i, n := range counts {
			child := spawnServe(t, t.TempDir(), "scale", "--stream-max-subscribers", "2000", "--workers", "8")
			pid := child.cmd.Process.Pid
			idle := rssKB(t, pid)
			conns := openStuckStreams(t, child.base, n)
			connected := rssKB(t, pid)
			start := time.Now()
			postEvents(t, child.base, events, 16)
			rate := float64(events) / time.Since(start).Seconds()
			measured[i] = append(measured[i], row{n, rate, idle, connected, rssKB(t, pid)})
			for _, c := range conns {
				c.Close()
			}
			child.cmd.Process.Kill()
			child.cmd.Wait()
		}
	}
	rows := make([]row, len(counts))
	for i, rs := range measured {
		median := func(field func(row) float64) float64 {
			vs := make([]float64, len(rs))
			for j, r := range rs {
				vs[j] = field(r)
			}
			slices.Sort(vs)
			return vs[len(vs)/2]
		}
		rows[i] = row{
			subscribers: counts[i],
			rate:        median(func(r row) float64 { return r.rate }),
			idleKB:      int(median(func(r row) float64 { return float64(r.idleKB) })),
			connectedKB: int(median(func(r row) float64 { return float64(r.connectedKB - r.idleKB) })),
			afterKB:     int(median(func(r row) float64 { return float64(r.afterKB - r.idleKB) })),
		}
	}
	base := rows[0]
	mb := func(kb int) float64 { return float64(kb) / 1024 }
	t.Logf("median of %d interleaved rounds of %d events", rounds, events)
	t.Logf("| subscribers | intake events/s | vs none | RSS idle | connected, above idle | after intake, above idle |")
	t.Logf("|---|---|---|---|---|---|")
	for _, r := range rows {
		t.Logf("| %d | %.0f | %.2f× | %.1f MB | %.1f MB | %.1f MB |", r.subscribers, r.rate, r.rate/base.rate,
			mb(r.idleKB), mb(r.connectedKB), mb(r.afterKB))
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
