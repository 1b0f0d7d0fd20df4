package engine

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/oklog/ulid/v2"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// SeedHeader carries the event id seed the official Inngest clients send with
// every request: "<unix ms>,<base64 of 10 random bytes>". A client retrying a
// request sends the same seed.
const SeedHeader = "X-Inngest-Event-Id-Seed"

// SeededIDs derives the ids of a request's n events from its seed, the i-th
// from the seed's time and its entropy plus i, so that a retried request
// stores its events under the same ids and the store recognises them as
// duplicates. It returns nil for a missing or malformed seed, and for one
// dated after store.MaxTime (an event without ts takes its id's time).
func SeededIDs(seed string, n int) []string { return seededIDs(seed, n, 1) }

// SeededIDs is the package's SeededIDs for the engine's store. On a
// partitioned store the i-th id takes the entropy plus 32 i, so that every
// id of a request has the seed's last character, which place replaces
// with its partition's digit without two ids meeting.
func (e *Engine) SeededIDs(seed string, n int) []string {
	if e.partitions > 1 {
		return seededIDs(seed, n, 32)
	}
	return SeededIDs(seed, n)
}

// seededIDs is SeededIDs with the i-th id's entropy plus stride i.
func seededIDs(seed string, n int, stride uint64) []string {
	msText, entText, ok := strings.Cut(seed, ",")
	if !ok || n <= 0 {
		return nil
	}
	ms, err := strconv.ParseInt(msText, 10, 64)
	if err != nil || ms <= 0 || ms > store.MaxMS {
		return nil
	}
	entropy, err := base64.StdEncoding.DecodeString(entText)
	if err != nil || len(entropy) != 10 {
		return nil
	}
	ids := make([]string, n)
	for i := range n {
		var id ulid.ULID
		if err := id.SetTime(uint64(ms)); err != nil {
			return nil
		}
		e := [10]byte(entropy)
		addUint(&e, uint64(i)*stride)
		if err := id.SetEntropy(e[:]); err != nil {
			return nil
		}
		ids[i] = id.String()
	}
	return ids
}

// addUint adds v to the big-endian number in e, wrapping around.
func addUint(e *[10]byte, v uint64) {
	for i := len(e) - 1; i >= 0 && v > 0; i-- {
		sum := uint64(e[i]) + v&0xff
		e[i] = byte(sum)
		v = v>>8 + sum>>8
	}
}

// derivedID is the id of the i-th event run runID emits in step (its
// failure event: step ""), on a partitioned store (Engine.place): a ULID
// of the run's time whose random part is a hash of the three, so that an
// emit the store publishes ahead of its step's commit (in another
// partition) is the same event when the step executes again.
func derivedID(runID, step string, i int) string {
	var id ulid.ULID
	if r, err := ulid.Parse(runID); err == nil {
		_ = id.SetTime(r.Time())
	}
	sum := sha256.Sum256([]byte(runID + "\x00" + step + "\x00" + strconv.Itoa(i)))
	_ = id.SetEntropy(sum[:10])
	return id.String()
}
