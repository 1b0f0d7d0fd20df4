package engine

import (
	"encoding/base64"
	"testing"

	"github.com/oklog/ulid/v2"
)

func TestSeededIDs(t *testing.T) {
	t.Parallel()
	entropy := base64.StdEncoding.EncodeToString([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe})
	seed := "1767225600000," + entropy
	ids := SeededIDs(seed, 3)
	if len(ids) != 3 {
		t.Fatalf("SeededIDs = %v, want 3 ids", ids)
	}
	again := SeededIDs(seed, 3)
	seen := map[string]bool{}
	for i, id := range ids {
		if again[i] != id {
			t.Errorf("id %d differs between two calls: %s, %s", i, id, again[i])
		}
		u, err := ulid.Parse(id)
		if err != nil || u.Time() != 1767225600000 {
			t.Errorf("id %d = %s (%v), want a ULID at the seed's time", i, id, err)
		}
		seen[id] = true
	}
	if len(seen) != 3 {
		t.Errorf("ids are not distinct: %v", ids)
	}
	// The entropy carries across bytes: 0xfe + 2 = 0x0100.
	u := ulid.MustParse(ids[2])
	if e := u.Entropy(); e[8] != 1 || e[9] != 0 {
		t.Errorf("third entropy = %x, want ...0100", e)
	}
	for _, bad := range []string{"", "nonsense", "123", "abc," + entropy, "-5," + entropy, "1767225600000,!!", "1767225600000," + base64.StdEncoding.EncodeToString([]byte{1, 2, 3}),
		"253402300800000," + entropy} { // after 9999-12-31: its events would be dated so
		if got := SeededIDs(bad, 2); got != nil {
			t.Errorf("SeededIDs(%q) = %v, want nil", bad, got)
		}
	}
}
