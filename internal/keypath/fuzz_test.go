package keypath

import (
	"encoding/json"
	"testing"
)

// FuzzLookup: key-path evaluation never panics and finds only JSON.
func FuzzLookup(f *testing.F) {
	f.Add([]byte(`{"data":{"slug":"a","n":[1,2]}}`), "event.data.slug")
	f.Add([]byte(`{"data":{"a.b":1}}`), "event.data.a\\.b")
	f.Add([]byte(`[1,2]`), "event.0")
	f.Add([]byte(`{"x":`), "event.x")
	f.Add([]byte(`{}`), "..")
	f.Fuzz(func(t *testing.T, doc []byte, path string) {
		v, ok, err := Lookup(doc, path)
		if err == nil && ok && !json.Valid(v) {
			t.Fatalf("Lookup(%q, %q) = %q, not JSON", doc, path, v)
		}
		Key(doc, path)
	})
}
