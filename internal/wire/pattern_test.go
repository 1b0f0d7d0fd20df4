package wire_test

import (
	"testing"

	"github.com/dcyfr/cyberdrew/internal/wire"
)

func TestEventPattern(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern string
		match   []string
		miss    []string
	}{
		{"blog/*", []string{"blog/post", "blog/a/b", "blog/*"}, []string{"blog/", "blog", "blogpost", "news/blog/x", "BLOG/post"}},
		{"contact/form.*", []string{"contact/form.submitted"}, []string{"contact/form.", "contact/form", "contact/formx"}},
		{"test/hello.world", []string{"test/hello.world"}, []string{"test/hello.world2", "test/hello", "Test/hello.world"}},
	}
	for _, tt := range tests {
		p, err := wire.ParseEventPattern(tt.pattern)
		if err != nil {
			t.Fatalf("parse %q: %v", tt.pattern, err)
		}
		for _, name := range tt.match {
			if !p.Match(name) || !wire.MatchEvent(tt.pattern, name) || !(wire.Trigger{Event: tt.pattern}).Matches(name) {
				t.Errorf("%q does not match %q", tt.pattern, name)
			}
		}
		for _, name := range tt.miss {
			if p.Match(name) || wire.MatchEvent(tt.pattern, name) || (wire.Trigger{Event: tt.pattern}).Matches(name) {
				t.Errorf("%q matches %q", tt.pattern, name)
			}
		}
	}
	for _, bad := range []string{"", "*", "blog*", "blog/*/x", "a/**", "blog/*.x"} {
		if _, err := wire.ParseEventPattern(bad); err == nil {
			t.Errorf("pattern %q parsed", bad)
		}
		if wire.MatchEvent(bad, "blog/x") || wire.MatchEvent(bad, bad) {
			t.Errorf("invalid pattern %q matches", bad)
		}
	}
	if (wire.Trigger{Cron: "* * * * *"}).Matches("") {
		t.Error("a cron trigger matches an event")
	}
}
