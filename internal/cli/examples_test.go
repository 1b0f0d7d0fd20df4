package cli

import (
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
)

// Every sample payload of send --example passes the intake schema.
func TestExamplesPassTheSchema(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, name := range siteEventNames() {
		data, ok := examplePayload(name, now)
		if !ok {
			t.Fatalf("no example for %s", name)
		}
		if err := jobs.Validate(0, engine.IncomingEvent{Name: name, Data: data}); err != nil {
			t.Errorf("%s: example %s: %v", name, data, err)
		}
	}
}
