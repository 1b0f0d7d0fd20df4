package redis

import (
	"context"
	"hash/fnv"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// CountWindow counts one request against the fixed-window rate limit key
// (limit requests per window, the window opening at the key's first
// request) in Redis (lua/window.lua), so every daemon on this Redis
// enforces one limit.
func (s *Store) CountWindow(ctx context.Context, key string, limit int, window time.Duration) (store.RateCount, error) {
	if limit <= 0 || window < time.Millisecond {
		return store.RateCount{}, s.wrap("count window", store.ErrInvalid)
	}
	now := s.clock.Now()
	v, err := s.run(ctx, scriptWindow, []string{s.keys.parts[windowPartition(key, s.Partitions())]}, now.UnixMilli(), key, limit, window.Milliseconds()).Int64Slice()
	if err != nil {
		return store.RateCount{}, s.wrap("count window", err)
	}
	c := store.RateCount{Allowed: v[0] == 1, Remaining: int(v[1]), Reset: fromMS(v[2])}
	if !c.Allowed {
		c.RetryAfter = c.Reset.Sub(now)
	}
	return c, nil
}

// windowPartition is the partition of the window of key among n: its
// hash, so that a site's many visitors' windows (one a visitor and route)
// spread over a cluster's masters with the runs. A window is one key,
// counted by a script of its own.
func windowPartition(key string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}
