package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
)

// TestListingKeptRunsOnAPartitionedCluster: runs kept in their events in
// every partition of a Cluster (each partition its own slot) are listed;
// their reads go one MULTI per partition, never one across slots.
func TestListingKeptRunsOnAPartitionedCluster(t *testing.T) {
	cl := cluster(t)
	n := nextID.Add(1)
	s, err := redis.Open(context.Background(), cl.URL(), redis.Options{Clock: clockwork.NewRealClock(),
		Prefix: fmt.Sprintf("t%d:", n), SitePrefix: fmt.Sprintf("t%d-site:{site%d}:", n, n), Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	parts := map[int]bool{}
	for i := range 12 {
		id := fmt.Sprintf("01KJVKTCGRPKH1Z5PNH9T6Y1%02d", i) // the last digit picks the partition
		parts[store.PartitionOf(id, 3)] = true
		if _, err := s.Publish(ctx, []store.Publication{{Event: store.Event{ID: id, Name: "app/x", Data: json.RawMessage(`{}`)},
			Runs: []store.RunSpec{{ID: id, FunctionID: "f", AvailableAt: time.Now().Add(time.Hour)}}}}); err != nil {
			t.Fatal(err)
		}
	}
	if len(parts) != 3 {
		t.Fatalf("the runs are in %d partitions, want 3", len(parts))
	}
	for _, f := range []store.RunFilter{{FunctionID: "f"}, {Statuses: []store.Status{store.StatusQueued}}} {
		pg, err := s.ListRuns(ctx, f)
		if err != nil || len(pg.Items) != 12 {
			t.Errorf("ListRuns(%+v) = %d runs, %v; want 12", f, len(pg.Items), err)
		}
	}
}
