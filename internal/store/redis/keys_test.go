package redis

import (
	"fmt"
	"testing"
)

func TestKVDeadlineKeySharesTheSlot(t *testing.T) {
	t.Parallel()
	k := newKeys("cyberdrew:", "", 1)
	tests := []struct{ site, want string }{
		{"views:post:hello", "cyberdrew:kvttl:{views:post:hello}:views:post:hello"},
		{"user:{42}:seen", "cyberdrew:kvttl:{42}:user:{42}:seen"},
	}
	for _, tt := range tests {
		if got := k.kvDeadlineKey(tt.site); got != tt.want {
			t.Errorf("kvDeadlineKey(%q) = %q, want %q", tt.site, got, tt.want)
		}
	}
	if !k.isEngineKey(k.kvDeadlineKey("x")) || !k.isEngineKey(k.run("r")) || k.isEngineKey("views:x") {
		t.Errorf("isEngineKey does not tell engine keys from site keys")
	}
	if got := k.run("r1"); got != "cyberdrew:{engine}:run:r1" {
		t.Errorf("run key = %q", got)
	}
}

func TestGlobEscape(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"p:", "p:"},
		{"p_%", "p_%"},
		{`a*b?c[d]e\`, `a\*b\?c\[d\]e\\`},
	}
	for _, tt := range tests {
		if got := globEscape(tt.in); got != tt.want {
			t.Errorf("globEscape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestSlot checks the hash slot against values Redis Cluster gives
// (CLUSTER KEYSLOT) and the hash tag rules of its specification.
func TestSlot(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key  string
		want int
	}{
		{"123456789", 12739},
		{"foo", 12182},
		{"{foo}bar", 12182},
		{"x{foo}{bar}", 12182},
		{"cyberdrew:{engine}:queue", slot("engine")},
		{"foo{}{bar}", slot("foo{}{bar}")},
		{"foo{{bar}}zap", slot("{bar")},
	}
	for _, tt := range tests {
		if got := slot(tt.key); got != tt.want {
			t.Errorf("slot(%q) = %d, want %d", tt.key, got, tt.want)
		}
	}
}

func TestInEngineSlot(t *testing.T) {
	t.Parallel()
	for prefix, want := range map[string]bool{
		"":               false,
		"site:":          false,
		"site:{engine}:": true,
		"{engine}":       true,
		"{engine":        false,
		"{other}:":       false,
		"a{}{engine}:":   false, // the first braces decide, and are empty
	} {
		if got := InEngineSlot(prefix); got != want {
			t.Errorf("InEngineSlot(%q) = %v, want %v", prefix, got, want)
		}
	}
}

// TestMemberPadsLikeTheScripts: an index member is the time in ms padded
// to 13 digits, as the scripts' member writes it, then the id.
func TestMemberPadsLikeTheScripts(t *testing.T) {
	for _, ms := range []int64{0, 7, 1796630400000, 9999999999999, 12345678901234, -5} {
		if got, want := member(ms, "01ID"), fmt.Sprintf("%013d:01ID", ms); got != want {
			t.Errorf("member(%d) = %q, want %q", ms, got, want)
		}
	}
}
