package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/jonboulle/clockwork"
	goredis "github.com/redis/go-redis/v9"
)

// TestPartitionsSpreadOverTheClustersMasters deploys the daemon on a
// three-master Redis Cluster, once as before (the engine's records in the
// one slot of {engine}) and once with --redis-partitions 12, has 300
// readers post their views through /api/views as the site's tracker does,
// and counts the keys each master holds once every view's run completed.
// Partitioned, every master holds a share of the engine's records (the
// 12 partitions' slots fall 4 on each master of the test cluster); the
// site's keys keep their one slot.
func TestPartitionsSpreadOverTheClustersMasters(t *testing.T) {
	t.Parallel()
	const (
		slug, title = "spread", "Spread over the masters"
		readers     = 300
		clients     = 16
	)
	for _, backend := range []string{"cluster", "cluster-partitioned"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			d := deploy(t, backend, clockwork.NewFakeClockAt(epoch))
			// 16 readers at a time, as the site's busiest minutes bring them.
			var wg sync.WaitGroup
			for c := range clients {
				wg.Go(func() {
					for n := c; n < readers; n += clients {
						session := fmt.Sprintf("sess_spread_%04d", n)
						r := visitorN(n).post(t, d, "/api/views", "/blog/"+slug, viewBody(slug, title, session, 5000+n, ""))
						if r.status != http.StatusOK {
							t.Errorf("reader %d: POST /api/views = %d %s", n, r.status, r.body)
						}
					}
				})
			}
			wg.Wait()
			d.awaitRuns(t, "track-post-view", readers)
			d.checkViews(t, postViews{slug, readers, readers})

			// Keys per master: the engine's records (under its hash tags),
			// the receipts of the steps' effects (ahead of their records,
			// in the site keys' slot), the site's keys with their deadline
			// keys, and the rest.
			type count struct{ records, receipts, site, other, whole int }
			var mu sync.Mutex
			var masters []count
			slots := map[string]int{} // the records' keys per hash tag
			err := d.native.(*goredis.ClusterClient).ForEachMaster(context.Background(), func(ctx context.Context, c *goredis.Client) error {
				var n count
				iter := c.Scan(ctx, 0, "*", 1000).Iterator()
				for iter.Next(ctx) {
					switch k := iter.Val(); {
					case strings.HasPrefix(k, "cyberdrew:{engine"):
						n.records++
						tag, _, _ := strings.Cut(strings.TrimPrefix(k, "cyberdrew:"), "}")
						mu.Lock()
						slots[tag+"}"]++
						mu.Unlock()
					case strings.HasPrefix(k, "cyberdrew:receipt:"):
						n.receipts++
						if v, err := c.Get(ctx, k).Result(); err == nil && v != "" {
							n.whole++ // not yet a tombstone
						}
					case strings.HasPrefix(k, clusterSitePrefix), strings.HasPrefix(k, "cyberdrew:kvttl:"):
						n.site++
					default:
						n.other++
					}
				}
				mu.Lock()
				defer mu.Unlock()
				masters = append(masters, n)
				return iter.Err()
			})
			if err != nil {
				t.Fatal(err)
			}
			total, whole := 0, 0
			for _, n := range masters {
				total += n.records
				whole += n.whole
			}
			t.Logf("%s: keys per master after %d views {records receipts site other receipts-not-yet-tombstones}: %v; the records' keys per slot: %v",
				backend, readers, masters, slots)
			// A receipt becomes a tombstone with the next commit in its
			// slot: only the last commits' may still hold their steps.
			if whole > 2*8 {
				t.Errorf("%d receipts still hold their steps, want at most two a worker", whole)
			}
			for i, n := range masters {
				switch {
				case backend == "cluster" && n.records != 0 && n.records != total:
					t.Errorf("master %d holds %d of the engine's %d records' keys, want all or none: one slot", i, n.records, total)
				case backend == "cluster-partitioned" && n.records < total/4:
					t.Errorf("master %d holds %d of the engine's %d records' keys, want at least a quarter", i, n.records, total)
				}
			}
		})
	}
}
