package api

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/dcyfr/cyberdrew/internal/engine"
)

// FuzzDecodeEvents: intake decoding never panics, and what it accepts is
// a well-formed batch.
func FuzzDecodeEvents(f *testing.F) {
	for _, seed := range []string{
		`{"name":"test/x"}`, `[{"name":"a","data":{"k":1},"id":"i","ts":1700000000000,"v":"1"}]`,
		`{"name":"a","user":{"id":1},"ts":1.7e12}`, `[]`, `[{"name":""}]`, `{"name":"inngest/x"}`,
		"{\"name\":\"a\xff\"}", `{"name":"a\u0000"}`, `[[[[`, `{"name":"a","data":null,"ts":null}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, err := decodeEvents(body, 4096, 10)
		if err != nil {
			var he *httpError
			var ve *engine.ValidationError
			if !errors.As(err, &he) && !errors.As(err, &ve) {
				t.Fatalf("error of an unexpected type %T: %v", err, err)
			}
			return
		}
		if len(evs) == 0 || len(evs) > 10 {
			t.Fatalf("accepted %d events", len(evs))
		}
		for _, ev := range evs {
			if ev.Name == "" || len(ev.Name) > MaxNameLength || !utf8.ValidString(ev.Name) ||
				strings.IndexFunc(ev.Name, unicode.IsControl) >= 0 || ev.TS < 0 {
				t.Fatalf("accepted a faulty event %+v", ev)
			}
			if len(ev.Data) == 0 || ev.Data[0] != '{' {
				t.Fatalf("accepted data %q", ev.Data)
			}
		}
	})
}
