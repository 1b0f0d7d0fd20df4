package main

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// TestMain lets the test binary serve as the worker processes the crash
// and RSS rows start, as the program itself does.
func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestQuick runs three scenarios of -quick end to end, one of them through
// worker processes and one through the real daemon with the site's
// functions, and checks the table has a figure in every cell it should.
// Without redis-server the Redis cells must say they were skipped.
func TestQuick(t *testing.T) {
	var stdout, stderr strings.Builder
	code := run([]string{"-quick", "-only", "burn-down,site-workload,crash"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	table := stdout.String()
	_, redisErr := redisBinary()
	if redisErr != nil && os.Getenv("CYBERDREW_TEST_REDIS") == "required" {
		t.Fatalf("CYBERDREW_TEST_REDIS=required but %v", redisErr)
	}
	for _, want := range []string{
		"| scenario | cyberdrew SQLite | cyberdrew Redis | asynq | ratio (Redis/asynq) |",
		"burn-down: 5000 queued no-op jobs",
		"crash recovery: 50 in-flight jobs",
		"site workload: 500 views of 6 posts, 16 clients, track-post-view: intake",
		"site workload: 500 views of 6 posts, 16 clients, track-post-view: end to end",
		"site workload: 500 views of 6 posts, 16 clients, track-post-view: processed / intake",
		"site workload: 500 views of 6 posts, 16 clients, track-post-view: bytes per stored view",
		"- command: `go run . -quick -only burn-down,site-workload,crash`",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if redisErr == nil {
		for _, want := range []string{
			"site workload: 500 views of 6 posts, 16 clients, track-post-view: Redis server CPU per view, µs",
			"Redis server CPU per executed run / task, µs",
		} {
			if !strings.Contains(table, want) {
				t.Errorf("table lacks %q:\n%s", want, table)
			}
		}
	}
	for line := range strings.SplitSeq(table, "\n") {
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(line, "| burn-down") && !strings.HasPrefix(line, "| crash recovery") && !strings.HasPrefix(line, "| site workload") {
			continue
		}
		if len(cells) != 7 {
			t.Errorf("row %q has %d cells, want 5", line, len(cells)-2)
			continue
		}
		redisOnly := strings.Contains(line, "Redis commands per view") || strings.Contains(line, "Redis server CPU per")
		if !redisOnly && strings.TrimSpace(cells[2]) == "—" {
			t.Errorf("row %q has no SQLite figure", line)
		}
		switch {
		case redisErr != nil && !strings.Contains(cells[3], "skipped: no redis-server"):
			t.Errorf("row %q: without redis-server the Redis cell must say it was skipped", line)
		case redisErr == nil && strings.TrimSpace(cells[3]) == "—":
			t.Errorf("row %q has no Redis figure", line)
		case redisErr == nil && strings.HasPrefix(line, "| site workload") && strings.TrimSpace(cells[4]) == "—":
			t.Errorf("row %q has no asynq figure", line)
		}
	}
	if strings.Contains(table, "error:") {
		t.Errorf("a cell failed:\n%s", table)
	}
}

// TestParseOptions checks the flags the README documents.
func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
		check   func(options) bool
	}{
		{args: nil, check: func(o options) bool { return len(o.persistence) == 2 && !o.quick }},
		{args: []string{"-quick"}, check: func(o options) bool { return len(o.persistence) == 1 && o.persistence[0] == aofAlways }},
		{args: []string{"-persistence", "none"}, check: func(o options) bool { return len(o.persistence) == 1 && o.persistence[0] == noAOF }},
		{args: []string{"-only", "latency,rss"}, check: func(o options) bool { return len(o.only) == 2 }},
		{args: []string{"-only", "nope"}, wantErr: `unknown scenario "nope"`},
		{args: []string{"-persistence", "rdb"}, wantErr: `unknown setting "rdb"`},
		{args: []string{"extra"}, wantErr: "unexpected arguments"},
	} {
		o, err := parseOptions(tc.args, &strings.Builder{})
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.wantErr == "" && !tc.check(o):
			t.Errorf("%q: options %+v", tc.args, o)
		}
	}
}

// views is a post counter store for TestCheckViews.
type views map[string]string

func (v views) Get(_ context.Context, key string) (string, error) {
	if s, ok := v[key]; ok {
		return s, nil
	}
	return "", store.ErrNotFound
}

// TestCheckViews checks the site workload's end check: every post's
// counter must equal the views acknowledged for it, an absent counter
// counting as none.
func TestCheckViews(t *testing.T) {
	keys := jobs.Keys{}
	acked := func(n ...int64) []atomic.Int64 {
		a := make([]atomic.Int64, len(sitePosts))
		for i, v := range n {
			a[i].Store(v)
		}
		return a
	}
	all := views{}
	for i, p := range sitePosts {
		all[keys.PostViews(p.slug)] = strconv.Itoa(i + 1)
	}
	for _, tc := range []struct {
		name    string
		kv      views
		acked   []atomic.Int64
		wantErr string
	}{
		{name: "every view counted", kv: all, acked: acked(1, 2, 3, 4, 5, 6)},
		{name: "posts never viewed", kv: views{keys.PostViews(sitePosts[0].slug): "7"}, acked: acked(7)},
		{name: "a view lost", kv: all, acked: acked(1, 3, 3, 4, 5, 6), wantErr: "views of " + sitePosts[1].slug + " = 2, want 3 acknowledged"},
		{name: "a view counted twice", kv: all, acked: acked(1, 2, 3, 4, 5, 5), wantErr: "= 6, want 5"},
		{name: "a counter missing", kv: views{}, acked: acked(1), wantErr: "= 0, want 1"},
	} {
		err := checkViews(context.Background(), tc.kv, tc.acked)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
}

// TestQuickHistory runs the history scenario of -quick end to end: it
// fills a store of each backend, compares it with empty ones and lists
// it through the daemon's API (each page checked against its filter), and
// every history row must have its figures.
func TestQuickHistory(t *testing.T) {
	var stdout, stderr strings.Builder
	code := run([]string{"-quick", "-only", "history"}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	table := stdout.String()
	_, redisErr := redisBinary()
	what := "| history: 10000 events and runs stored: "
	for _, want := range []string{
		what + "filling it through the engine (256 workers), s",
		what + "bytes per stored event with its run and steps",
		"events/s ↑ (Redis: AOF, appendfsync always), empty store",
		"events/s ↑ (Redis: AOF, appendfsync always), with the history",
		"events/s ↑ (Redis: AOF, appendfsync always): history / empty ↑",
		"jobs/s ↑ (Redis: AOF, appendfsync always): history / empty ↑",
		"GET /v1/runs, first page (50), p50 / p99 ms",
		"GET /v1/runs?status=Failed, the page after 100 items, p50 / p99 ms",
		"GET /v1/events?name=history%2Fcontact.submitted, first page (50)",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	latency := regexp.MustCompile(`^\d+\.\d\d / \d+\.\d\d$`)
	rows := 0
	for line := range strings.SplitSeq(table, "\n") {
		if !strings.HasPrefix(line, "| history:") {
			continue
		}
		rows++
		cells := strings.Split(line, "|")
		if len(cells) != 7 {
			t.Errorf("row %q has %d cells, want 5", line, len(cells)-2)
			continue
		}
		sq, rd := strings.TrimSpace(cells[2]), strings.TrimSpace(cells[3])
		if _, err := strconv.ParseFloat(sq, 64); err != nil && !latency.MatchString(sq) {
			t.Errorf("row %q: SQLite cell %q is not a figure", line, sq)
		}
		switch {
		case redisErr != nil && rd != "skipped: no redis-server":
			t.Errorf("row %q: without redis-server the Redis cell must say it was skipped", line)
		case redisErr == nil && strings.Contains(line, "GET /v1/") && !latency.MatchString(rd):
			t.Errorf("row %q: Redis cell %q is not p50 / p99", line, rd)
		case redisErr == nil && !strings.Contains(line, "GET /v1/"):
			if _, err := strconv.ParseFloat(rd, 64); err != nil {
				t.Errorf("row %q: Redis cell %q is not a figure", line, rd)
			}
		}
	}
	if want := 2 + 6 + 2*len(historyListings); rows != want {
		t.Errorf("%d history rows, want %d:\n%s", rows, want, table)
	}
}

// TestHistoryMix checks the history's shape: four event names, one run
// each, and 2 % of the runs failing, all of them contact forms.
func TestHistoryMix(t *testing.T) {
	names := map[string]int{}
	failed := 0
	for i := range 1000 {
		names[historyEvent(i)]++
		if historyFails(i) {
			failed++
			if historyEvent(i) != historyContact {
				t.Errorf("event %d fails but is %s", i, historyEvent(i))
			}
		}
		var d struct {
			N int `json:"n"`
		}
		if err := json.Unmarshal(historyData(i, time.Now()), &d); err != nil || d.N != i {
			t.Errorf("data of event %d: n = %d, %v", i, d.N, err)
		}
	}
	want := map[string]int{historyViewed: 700, historyContact: 100, historyRefresh: 100, historyDeploy: 100}
	if !maps.Equal(names, want) {
		t.Errorf("event names %v, want %v", names, want)
	}
	if failed != 20 {
		t.Errorf("%d of 1000 runs fail, want 20", failed)
	}
}

// TestCheckPage checks the rule every measured listing page must follow:
// full, and nothing its filter excludes.
func TestCheckPage(t *testing.T) {
	failedOnly := func(it listItem) bool { return it.Status == "Failed" }
	page := func(statuses ...string) []listItem {
		var out []listItem
		for _, s := range statuses {
			out = append(out, listItem{Status: s})
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		items   []listItem
		want    int
		wantErr string
	}{
		{name: "full and filtered", items: page("Failed", "Failed"), want: 2},
		{name: "any length while walking", items: page("Failed"), want: 0},
		{name: "short page", items: page("Failed"), want: 2, wantErr: "1 items, want 2"},
		{name: "an item the filter excludes", items: page("Failed", "Completed"), want: 2, wantErr: "which the filter excludes"},
	} {
		err := checkPage("/v1/runs?status=Failed", tc.items, failedOnly, tc.want)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
	if got := withQuery("/v1/runs?status=Failed", "cursor", "a b"); got != "/v1/runs?status=Failed&cursor=a+b" {
		t.Errorf("withQuery = %q", got)
	}
	if got := withQuery("/v1/events", "limit", "10"); got != "/v1/events?limit=10" {
		t.Errorf("withQuery = %q", got)
	}
}

// TestMedianCell: the middle figure of the rounds, the lower middle of an
// even count, and a round without a figure wins over the figures.
func TestMedianCell(t *testing.T) {
	f := func(v float64) cell { return figure("%.0f", v) }
	for _, tc := range []struct {
		in   []cell
		want string
	}{
		{[]cell{f(3950), f(2384), f(4620)}, "3950"},
		{[]cell{f(5), f(1), f(9), f(7)}, "5"},
		{[]cell{f(1)}, "1"},
		{[]cell{f(1), failure(errors.New("boom")), f(3)}, "error: boom"},
		{[]cell{noRedis, noRedis}, noRedis.text},
	} {
		if got := medianCell(tc.in); got.text != tc.want {
			t.Errorf("medianCell(%v) = %q, want %q", tc.in, got.text, tc.want)
		}
	}
}

// TestHTTPFloorIsAShareOfTheSameRequests measures the HTTP floor with a
// few requests and checks the row that divides the intake by it.
func TestHTTPFloorIsAShareOfTheSameRequests(t *testing.T) {
	floor, err := httpFloor(context.Background(), 300)
	if err != nil {
		t.Fatal(err)
	}
	if !floor.ok || floor.value <= 0 {
		t.Fatalf("floor %+v, want a rate", floor)
	}
	web := row{sqlite: figure("%.0f", floor.value/2), redis: noRedis}
	r := ofFloor(web, floor, persistence{name: "none"})
	if r.sqlite.text != "0.50" || r.redis.ok || !strings.Contains(r.scenario, floor.text+" requests/s") {
		t.Errorf("row %+v, want SQLite 0.50 of %s requests/s and no Redis share", r, floor.text)
	}
}
