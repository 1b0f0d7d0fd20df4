// Package keypath evaluates the dotted paths that flow-control keys and
// WaitForEvent matches use to point into an event, such as
// "event.data.slug". No expression language: a path names one value.
package keypath

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Parse checks a path and returns its segments without the optional leading
// "event." (or "async.", the name Inngest gives the awaited event).
func Parse(path string) ([]string, error) {
	p := strings.TrimSpace(path)
	if p == "" {
		return nil, fmt.Errorf("keypath: empty path")
	}
	segs := strings.Split(p, ".")
	if segs[0] == "event" || segs[0] == "async" {
		segs = segs[1:]
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("keypath: %q names the whole event", path)
	}
	for _, s := range segs {
		if s == "" {
			return nil, fmt.Errorf("keypath: %q has an empty segment", path)
		}
	}
	return segs, nil
}

// Lookup returns the compact JSON of the value at path inside doc (an event
// as JSON), and false when the event has no value there: a segment is
// missing, doc is not an object along the way, or the value is null or the
// empty string. An event without a value never shares a key with another
// one through that empty value (docs/engine.md, "Flow control").
func Lookup(doc []byte, path string) (json.RawMessage, bool, error) {
	segs, err := Parse(path)
	if err != nil {
		return nil, false, err
	}
	cur := json.RawMessage(doc)
	for _, s := range segs {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(cur, &obj); err != nil || obj == nil {
			return nil, false, nil
		}
		next, ok := obj[s]
		if !ok {
			return nil, false, nil
		}
		cur = next
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, cur); err != nil {
		return nil, false, fmt.Errorf("keypath: %q: %w", path, err)
	}
	if v := buf.String(); v == "null" || v == `""` {
		return nil, false, nil
	}
	return buf.Bytes(), true, nil
}

// Key renders the value at path as a flow-control key: strings bare, other
// values as compact JSON. An event without a value there (see Lookup) gives
// "" and false.
func Key(doc []byte, path string) (string, bool, error) {
	raw, ok, err := Lookup(doc, path)
	if err != nil || !ok {
		return "", false, err
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true, nil
	}
	return string(raw), true, nil
}
