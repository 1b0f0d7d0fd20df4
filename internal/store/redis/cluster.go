package redis

import (
	"context"
	"fmt"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// Redis Cluster. Every engine key carries the hash tag {engine}, so the
// whole engine lives in one slot, on one master, and every engine script
// and transaction touches that slot only. What a cluster changes:
//
//   - commands that are not about keys reach the nodes they need: scripts
//     are loaded on every node (loadScripts), the site's prefix scan runs
//     SCAN on every master (eachMaster), and a WAIT goes to the master
//     holding the engine's slot, on the connection that ran the script
//     (engineNode);
//   - a step's key-value effects commit in the engine's script, so the
//     site keys they touch must share the engine's slot (inEngineSlot):
//     a site prefix with the tag {engine} puts them all there.

// eachMaster runs fn on every master of a cluster, concurrently, or on the
// one server otherwise.
func (s *Store) eachMaster(ctx context.Context, fn func(ctx context.Context, c goredis.Cmdable) error) error {
	if s.cluster == nil {
		return fn(ctx, s.rdb)
	}
	return s.cluster.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error { return fn(ctx, c) })
}

// nodeOf is a client of the one server that holds key (an engine
// prefix: its partition's keys): the store's own client, or on a cluster
// the master serving key's slot as the client last learnt it. A command it
// sends to a node that no longer serves the slot is answered MOVED (see
// movedOrGone).
func (s *Store) nodeOf(ctx context.Context, key string) (goredis.Cmdable, error) {
	if s.cluster == nil {
		return s.rdb, nil
	}
	return s.cluster.MasterForKey(ctx, key)
}

// movedOrGone asks the cluster client to learn the slots again after a
// command sent through nodeOf failed: the slot may have moved (a
// failover) or its master may be gone.
func (s *Store) movedOrGone(ctx context.Context, err error) {
	if s.cluster != nil && err != nil {
		s.cluster.ReloadState(ctx)
	}
}

// inEngineSlot refuses, on a cluster, Redis keys outside the engine's
// slot: one script cannot touch them with the engine's keys.
func (s *Store) inEngineSlot(names []string) error {
	return s.inSlotOf(s.keys.engine, names)
}

// inSlotOf refuses, on a cluster, Redis keys outside key's slot.
func (s *Store) inSlotOf(key string, names []string) error {
	if s.cluster == nil {
		return nil
	}
	want := slot(key)
	for _, n := range names {
		if slot(n) != want {
			return fmt.Errorf("%w: key %q is outside the Redis Cluster slot of %q, so a step cannot change them together "+
				"with its own record; give the site keys a prefix holding a hash tag (--site-prefix 'site:{engine}:')",
				store.ErrInvalid, n, key)
		}
	}
	return nil
}

// Cluster reports whether the store is on a Redis Cluster.
func (s *Store) Cluster() bool { return s.cluster != nil }

// InEngineSlot reports whether every key named prefix+anything shares the
// engine's Redis Cluster slot: prefix holds a complete hash tag of that
// slot, such as "site:{engine}:".
func InEngineSlot(prefix string) bool {
	return InOneSlot(prefix) && slot(prefix) == slot(newKeys("", "", 1).engine)
}

// InOneSlot reports whether every key named prefix+anything shares one
// Redis Cluster slot: prefix holds a complete hash tag, such as
// "site:{engine}:". A partitioned store on a cluster needs no more of the
// site's keys (ahead.go).
func InOneSlot(prefix string) bool { return hashed(prefix) != prefix }

// loadOnShards runs load on every node of a cluster (masters and
// replicas, so a promoted replica has the scripts too), concurrently, or
// on the one server otherwise.
func loadOnShards(ctx context.Context, c goredis.UniversalClient, load func(ctx context.Context, c goredis.Cmdable) error) error {
	cc, ok := c.(*goredis.ClusterClient)
	if !ok {
		return load(ctx, c)
	}
	return cc.ForEachShard(ctx, func(ctx context.Context, n *goredis.Client) error { return load(ctx, n) })
}
