package redis

import (
	"context"
	"strconv"

	goredis "github.com/redis/go-redis/v9"
)

// ScriptHashes are the SHA1 digests of every script the store loads.
func ScriptHashes() []string {
	hashes := make([]string, len(scriptSources))
	for i, src := range scriptSources {
		hashes[i] = goredis.NewScript(src).Hash()
	}
	return hashes
}

// SetMaxQueueList sets maxQueueList until the test ends. Not for parallel
// tests.
func SetMaxQueueList(t interface{ Cleanup(func()) }, n int64) {
	old := maxQueueList
	maxQueueList = n
	t.Cleanup(func() { maxQueueList = old })
}

// LoadLibrary loads the engine's function library as a call that found it
// missing does.
func LoadLibrary(ctx context.Context, s *Store) bool { return s.loadLibrary(ctx) }

// LayoutVersion is the layout this version writes, as layout holds it.
var LayoutVersion = strconv.Itoa(layoutVersion)
