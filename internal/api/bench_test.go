package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/dcyfr/cyberdrew/internal/api"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// nopEngine accepts every event at once, so that a benchmark measures the
// HTTP surface alone.
type nopEngine struct{}

func (nopEngine) Publish(_ context.Context, evs []engine.IncomingEvent) ([]engine.Accepted, error) {
	out := make([]engine.Accepted, len(evs))
	for i := range out {
		out[i].EventID = "01JNQ5S9M3ZKX4Y6V8W0A2B4C6"
	}
	return out, nil
}

func (nopEngine) Invoke(context.Context, string, json.RawMessage) (engine.Accepted, error) {
	return engine.Accepted{}, nil
}
func (nopEngine) Rerun(context.Context, string) (store.RunRef, error) { return store.RunRef{}, nil }
func (nopEngine) Cancel(context.Context, string) (store.Run, error)   { return store.Run{}, nil }
func (nopEngine) Functions() []engine.FunctionInfo                    { return nil }
func (nopEngine) Pulse() engine.Pulse                                 { return engine.Pulse{} }
func (nopEngine) SeededIDs(seed string, n int) []string               { return engine.SeededIDs(seed, n) }

// BenchmarkIntake posts one 100-byte event per request, from parallel
// clients over keep-alive loopback connections.
func BenchmarkIntake(b *testing.B) {
	event := []byte(`{"name":"test/hello.world","data":{"email":"someone@example.com","v":"3f2a9c01"},"ts":1740830400000}`)
	if len(event) != 100 {
		b.Fatalf("event is %d bytes, want 100", len(event))
	}
	_, st := newFakes()
	logger := slog.New(slog.DiscardHandler)
	srv := httptest.NewServer(api.New(api.Config{EventKeys: []string{"bench-key"}}, nopEngine{}, st, logger))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}
	url := srv.URL + "/e/bench-key"

	b.SetBytes(int64(len(event)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Post(url, "application/json", bytes.NewReader(event))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
