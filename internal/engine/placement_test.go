package engine_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// TestSeededRequestRetriedStoresOnce: an official client's request (its
// events' ids derived from its seed header) sent twice, as a client
// retries it, stores its events once and starts their runs once, on
// every backend: on a partitioned one the ids of a publication flow
// control decides on are moved to partition 0 the same way both times.
func TestSeededRequestRetriedStoresOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, options{noPool: true},
			engine.Function{ID: "plain", Triggers: []engine.Trigger{{Event: "test/seeded"}},
				Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil }},
			engine.Function{ID: "keyed", Triggers: []engine.Trigger{{Event: "test/keyed"}}, Idempotency: "event.data.k",
				Handler: func(ctx context.Context, r *engine.Run) (any, error) { return nil, nil }},
		)
		seed := "1767225600000," + base64.StdEncoding.EncodeToString([]byte("0123456789"))
		request := func() []engine.Accepted {
			ids := engine.SeededIDs(seed, 4)
			evs := []engine.IncomingEvent{
				{Name: "test/seeded", Data: json.RawMessage(`{"n":1}`)},
				{Name: "test/keyed", Data: json.RawMessage(`{"k":"a"}`)},
				{Name: "test/seeded", Data: json.RawMessage(`{"n":2}`)},
				{Name: "test/keyed", Data: json.RawMessage(`{"k":"b"}`)},
			}
			for i := range evs {
				evs[i].InternalID = ids[i]
			}
			acc, err := b.eng.Publish(b.ctx, evs)
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			return acc
		}
		first, again := request(), request()
		seen := map[string]bool{}
		for i := range first {
			if first[i].Duplicate || len(first[i].Runs) != 1 {
				t.Fatalf("event %d first: %+v, want stored with one run", i, first[i])
			}
			if !again[i].Duplicate || again[i].EventID != first[i].EventID || len(again[i].Runs) != 0 {
				t.Errorf("event %d again: %+v, want a duplicate of %s without runs", i, again[i], first[i].EventID)
			}
			if seen[first[i].EventID] {
				t.Errorf("event %d has the id of an earlier one, %s", i, first[i].EventID)
			}
			seen[first[i].EventID] = true
			if run := b.run(t, first[i].Runs[0].ID); run.EventID != first[i].EventID {
				t.Errorf("event %d's run has event %s, want %s", i, run.EventID, first[i].EventID)
			}
		}
		runs, err := b.st.ListRuns(b.ctx, store.RunFilter{})
		if err != nil || len(runs.Items) != 4 {
			t.Errorf("ListRuns = %d runs, %v; want 4", len(runs.Items), err)
		}
	})
}
