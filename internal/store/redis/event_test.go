package redis

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzStoredEventIsWhatJSONWrites checks that the hand-written encoding of
// an event is byte for byte what json.Marshal writes for it, for any
// client id, name, version and JSON data or user.
func FuzzStoredEventIsWhatJSONWrites(f *testing.F) {
	f.Add("", "blog/post.viewed", `{"slug":"hello-world"}`, "", "", int64(0), int64(0), false)
	f.Add("cid-1", "contact/form.submitted", `{"name":"Ann O'Neil","message":"Hi <there> & \"you\"\n"}`, `{"email":"a@b.c"}`, "2024-01-01.1", int64(1_700_000_000_000), int64(-5), true)
	f.Add("a\"b\\c", "café/évènement", "[1, 2,\n 3]", "null", "v\u2028", int64(-1), int64(1<<40), true)
	f.Add("\x00\x1f\x7f", "n", `"\u2028 <b>"`, "", "", int64(0), int64(7), false)
	f.Add("", "x", "{}", "", "", int64(0), int64(0), false)
	for _, v := range []string{`{"lt":"<"}`, `{"gt":">"}`, `{"amp":"&"}`, `["é"]`, `["\u2028"]`, "[\"\u2028\"]", `{"tab":"\t"}`} {
		f.Add("", "x", v, v, "", int64(0), int64(0), false)
	}
	f.Fuzz(func(t *testing.T, cid, name, data, user, version string, ts, lag int64, withTS bool) {
		if !json.Valid([]byte(data)) || (user != "" && !json.Valid([]byte(user))) {
			t.Skip() // Publication.Validate refuses these before they are encoded
		}
		se := storedEvent{ClientID: cid, Name: name, Data: json.RawMessage(data), Version: version, Lag: lag}
		if user != "" {
			se.User = json.RawMessage(user)
		}
		if withTS {
			se.TS = &ts
		}
		want, err := json.Marshal(se)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		got, err := appendStoredEvent(nil, &se)
		if err != nil {
			t.Fatalf("appendStoredEvent: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("appendStoredEvent wrote\n%s\njson.Marshal writes\n%s", got, want)
		}
	})
}
