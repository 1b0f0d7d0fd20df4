package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/redis"
	"github.com/dcyfr/cyberdrew/internal/store/redis/redistest"
	"github.com/dcyfr/cyberdrew/internal/store/storetest"
)

// TestConformanceSentinel runs the whole conformance suite through a
// redis+sentinel:// URL (a master, a replica and three sentinels), with
// every acknowledging write waiting for the replica (MinReplicas 1).
func TestConformanceSentinel(t *testing.T) {
	topo := redistest.StartSentinelT(t)
	storetest.Run(t, func(t *testing.T, clock *clockwork.FakeClock) store.Store {
		n := nextID.Add(1)
		s, err := redis.Open(context.Background(), topo.URL(0), redis.Options{
			Clock: clock, Prefix: fmt.Sprintf("t%d:", n), SitePrefix: fmt.Sprintf("t%d-site:", n),
			MinReplicas: 1, ReplicaTimeout: time.Second,
		})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
	// A master name no sentinel monitors is a setting to fix, named.
	wrong := strings.Replace(topo.URL(0), "/"+redistest.MasterName+"/", "/nosuch/", 1)
	if _, err := redis.Open(t.Context(), wrong, redis.Options{}); !errors.Is(err, store.ErrMisconfigured) || !strings.Contains(err.Error(), `master named "nosuch"`) {
		t.Errorf("Open(%s) = %v, want store.ErrMisconfigured naming the master", wrong, err)
	}
}

// TestTooFewReplicas: with MinReplicas 1 on a Redis without replicas, a
// publication is done on the master but refused with ErrNotReplicated,
// which callers that do not tell it apart take as ErrUnavailable.
func TestTooFewReplicas(t *testing.T) {
	t.Parallel()
	srv := server(t)
	ctx := t.Context()
	s, err := redis.Open(ctx, srv.URL(4), redis.Options{Prefix: fmt.Sprintf("few-%d:", nextID.Add(1)), MinReplicas: 1, ReplicaTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Publish(ctx, []store.Publication{{Event: store.Event{ID: "01JZZZZZZZZZZZZZZZZZZZZZZZ", Name: "app/few"}}})
	if !errors.Is(err, store.ErrNotReplicated) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Publish without a replica = %v, want ErrNotReplicated", err)
	}
	if _, err := s.GetEvent(ctx, "01JZZZZZZZZZZZZZZZZZZZZZZZ"); err != nil {
		t.Errorf("the unconfirmed event is not on the master: %v", err)
	}
	// Nor is the store ready (/readyz): every write it acknowledges needs
	// the replica it lacks.
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "0 of 1 replicas") {
		t.Errorf("Ping without a replica = %v, want ErrUnavailable saying 0 of 1 replicas", err)
	}
	for _, bad := range []redis.Options{{MinReplicas: -1}, {MinReplicas: 1}, {MinReplicas: 1, ReplicaTimeout: time.Minute}} {
		if s, err := redis.Open(ctx, srv.URL(4), bad); err == nil || !errors.Is(err, store.ErrInvalid) {
			if s != nil {
				s.Close()
			}
			t.Errorf("Open with %+v: %v, want ErrInvalid", bad, err)
		}
	}
}
