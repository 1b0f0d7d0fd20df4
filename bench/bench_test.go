package main

import (
	"os"
	"strings"
	"testing"
)

// TestMain lets the test binary serve as the worker processes the crash
// and RSS rows start, as the program itself does.
func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestQuick runs two scenarios of -quick end to end, one of them through
// worker processes, and checks the table has a figure in every cell it
// should. Without redis-server the Redis cells must say they were skipped.
func TestQuick(t *testing.T) {
	var stdout, stderr strings.Builder
	code := run([]string{"-quick", "-only", "burn-down,crash"}, &stdout, &stderr)
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
		"- command: `go run . -quick -only burn-down,crash`",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	for line := range strings.SplitSeq(table, "\n") {
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(line, "| burn-down") && !strings.HasPrefix(line, "| crash recovery") {
			continue
		}
		if len(cells) != 7 {
			t.Errorf("row %q has %d cells, want 5", line, len(cells)-2)
			continue
		}
		if strings.TrimSpace(cells[2]) == "—" {
			t.Errorf("row %q has no SQLite figure", line)
		}
		switch {
		case redisErr != nil && !strings.Contains(cells[3], "skipped: no redis-server"):
			t.Errorf("row %q: without redis-server the Redis cell must say it was skipped", line)
		case redisErr == nil && strings.TrimSpace(cells[3]) == "—":
			t.Errorf("row %q has no Redis figure", line)
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
