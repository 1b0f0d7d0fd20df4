package store

// A partitioned store (Store.Partitions > 1: the Redis store with
// Options.Partitions) keeps its records in several partitions, each a
// Redis Cluster hash slot of its own, and finds a record's partition from
// its id alone: PartitionOf. The caller that mints ids places them (the
// engine's place, the conformance suite's bundle): a publication's event
// and runs share one partition (Publication.Partition), so that a
// publication is one atomic write in one slot. A publication that flow
// control decides on, or with a client id (Pinned), goes in partition 0,
// where every flow-control key lives, so that those keys never leave one
// slot: the store refuses one elsewhere (ErrInvalid). docs/engine.md,
// "Spreading the engine over slots", has the layout.

// MaxPartitions bounds Partitions: PartitionOf reads one character of
// Crockford's base32.
const MaxPartitions = 32

// PartitionOf is the partition of id among n: the value of its last
// character in Crockford's base32 (a ULID's last random bits), modulo n.
// Any other last character, an empty id or n <= 1 give 0.
func PartitionOf(id string, n int) int {
	if n <= 1 || id == "" {
		return 0
	}
	return crockford(id[len(id)-1]) % n
}

// crockfordDigits are Crockford's base32 digits, as ULIDs write them.
const crockfordDigits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// crockford is the value of c in Crockford's base32 (upper case, as ULIDs
// are written), 0 for any other byte.
func crockford(c byte) int {
	for i := range len(crockfordDigits) {
		if crockfordDigits[i] == c {
			return i
		}
	}
	return 0
}

// FlowControlled reports whether the store decides on the run by a key
// shared with other runs: idempotency, rate limit, singleton, debounce or
// concurrency.
func (s RunSpec) FlowControlled() bool {
	return s.IdempotencyKey != "" || s.RateLimitKey != "" || s.SingletonKey != "" ||
		s.DebounceKey != "" || s.ConcurrencyKey != ""
}

// Pinned reports whether p must be stored in partition 0: it has a client
// id (deduplicated there) or a run that flow control decides on.
func (p Publication) Pinned() bool {
	if p.Event.ClientID != "" {
		return true
	}
	for i := range p.Runs {
		if p.Runs[i].FlowControlled() {
			return true
		}
	}
	return false
}

// Partition returns the partition among n that p's event and runs share,
// and false when they do not share one. A publication without an event id
// (the store gives it one) is in its runs' partition, 0 without runs.
func (p Publication) Partition(n int) (int, bool) {
	if n <= 1 {
		return 0, true
	}
	part := -1
	if p.Event.ID != "" {
		part = PartitionOf(p.Event.ID, n)
	}
	for _, r := range p.Runs {
		if q := PartitionOf(r.ID, n); part < 0 {
			part = q
		} else if q != part {
			return part, false
		}
	}
	return max(part, 0), true
}

// MintIn mints ids with mint until one falls in partition part of n, at
// most 64 tries per partition (a monotonic ULID source reaches every
// residue within 32 mints; a random one almost surely within 64 n). It
// returns the last id minted and whether it is in part.
func MintIn(part, n int, mint func() string) (string, bool) {
	id := mint()
	for range 64 * n {
		if PartitionOf(id, n) == part {
			return id, true
		}
		id = mint()
	}
	return id, PartitionOf(id, n) == part
}

// WithPartition is id with its last character replaced by the Crockford
// digit of part, so that PartitionOf(WithPartition(id, part), n) == part
// for every n > part.
func WithPartition(id string, part int) string {
	if id == "" {
		return id
	}
	return id[:len(id)-1] + string(crockfordDigits[part%len(crockfordDigits)])
}
