package redis

import (
	"context"
	"errors"
	"strconv"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dcyfr/cyberdrew/internal/store"
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

// PublishBothWays encodes pubs once (their minted ids and lease tokens)
// and stores them through tx as a transaction and through script by the
// publish script: the two stores' replies.
func PublishBothWays(ctx context.Context, tx, script *Store, pubs []store.Publication) (viaTx, viaScript []store.Published, err error) {
	items, err := tx.pubItems(pubs, tx.clock.Now(), 0)
	if err != nil {
		return nil, nil, err
	}
	if !tx.txPublishable(items) {
		return nil, nil, errors.New("not publishable as a transaction")
	}
	if viaTx, err = tx.publishTx(ctx, tx.keys, items); err != nil {
		return nil, nil, err
	}
	replies, err := script.publishScript(ctx, script.keys, items)
	if err != nil {
		return nil, nil, err
	}
	viaScript, err = publishedOf(replies)
	return viaTx, viaScript, err
}

// SetPublishTxHook has fn run between publishTx's check and its EXEC.
func SetPublishTxHook(s *Store, fn func()) { s.publishTxHook = fn }

// EnginePrefix is the store's engine key prefix, hash tag included.
func EnginePrefix(s *Store) string { return s.keys.engine }

// CommitEffectsAhead has s commit a step's effects ahead of its record,
// as a partitioned store on a Cluster does, on any server.
func CommitEffectsAhead(s *Store) { s.effectsAhead = true }
