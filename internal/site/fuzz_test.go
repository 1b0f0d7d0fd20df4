package site

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store/sqlite"
)

// validatingPublisher accepts what the site's event schemas accept.
type validatingPublisher struct{}

func (validatingPublisher) Publish(_ context.Context, evs []engine.IncomingEvent) ([]engine.Accepted, error) {
	out := make([]engine.Accepted, len(evs))
	for i, ev := range evs {
		if err := jobs.Validate(i, ev); err != nil {
			return nil, err
		}
		out[i] = engine.Accepted{EventID: "e"}
	}
	return out, nil
}

// FuzzRouteBodies sends each site route's body through its handler: no
// panic, a 2xx, 4xx or 503 answer, always JSON.
func FuzzRouteBodies(f *testing.F) {
	for _, seed := range []struct{ route, body string }{
		{"contact", `{"name":"Eve Example","email":"eve@example.com","message":"hello there, friend"}`},
		{"contact", `{"name":"Eve\r\nBcc: x","email":"eve@example.com","message":"hello there"}`},
		{"contact", `{"website":"spam"}`},
		{"views", `{"slug":"a-post","sessionId":"abcdefghijkl","isVisible":true,"timeOnPage":9000,"title":"T"}`},
		{"views", `{"slug":"../x","sessionId":"a","isVisible":true}`},
		{"views", `[1]`},
	} {
		f.Add(seed.route, []byte(seed.body))
	}
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	st, err := sqlite.Open(ctx, filepath.Join(f.TempDir(), "fuzz.db"), sqlite.Options{Clock: clock})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	s := New(Config{Origins: []string{"*"}}, validatingPublisher{}, st, clock, slog.New(slog.DiscardHandler))
	routes := s.Routes()
	f.Fuzz(func(t *testing.T, route string, body []byte) {
		h, ok := routes["POST /api/"+route]
		if !ok {
			return
		}
		clock.Advance(time.Hour) // past every rate-limit window
		r := httptest.NewRequest(http.MethodPost, "/api/"+route, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if c := w.Code; !(c >= 200 && c < 300 || c >= 400 && c < 500 || c == 503) {
			t.Fatalf("%s %q: status %d %s", route, body, c, w.Body)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("%s %q: answer is not JSON: %q", route, body, w.Body)
		}
	})
}
