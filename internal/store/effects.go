package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// ErrConflict: a key a transactional step read changed before its commit
// (CommitStep). Nothing was applied; the step body may run again.
var ErrConflict = errors.New("conflict: a key read by the step changed")

// ErrSuperseded: the step's effects were applied by an earlier commit of
// the same steps, whose worker's lease lapsed before it recorded them (a
// store whose effects commit ahead of their record: a partitioned Redis
// store on a Cluster). Nothing more was applied; the steps are recorded as
// that commit made them, and the run must be executed again from its
// recorded steps (the worker hands it back).
var ErrSuperseded = errors.New("superseded: an earlier commit of the step applied its effects")

// Effects are the KV reads and writes of a transactional step. CommitStep
// applies them with the step's record, atomically: every Read must still
// hold, then the Writes apply in order.
type Effects struct {
	Reads  []Read
	Writes []Write
}

// Empty reports whether the step neither read nor wrote a key.
func (fx Effects) Empty() bool { return len(fx.Reads) == 0 && len(fx.Writes) == 0 }

// Keys lists the keys the effects touch, each once, in first-use order.
func (fx Effects) Keys() []string {
	var keys []string
	seen := map[string]bool{}
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	for _, r := range fx.Reads {
		add(r.Key)
	}
	for _, w := range fx.Writes {
		add(w.Key)
	}
	return keys
}

// ReadKind says what a Read observed.
type ReadKind string

// Read kinds.
const (
	// ReadString: the key held the string Value (Exists) or was absent.
	ReadString ReadKind = "string"
	// ReadMember: Member was (Exists) or was not in the set at Key (an
	// absent key has no members).
	ReadMember ReadKind = "member"
	// ReadCard: the set at Key had Card members (0 when absent).
	ReadCard ReadKind = "card"
)

// Read is one observation a commit checks.
type Read struct {
	Key    string
	Kind   ReadKind
	Exists bool
	Value  string
	Member string
	Card   int64
}

// WriteOp is what a Write does; each is the KV method of the same name.
type WriteOp string

// Write ops.
const (
	OpSet    WriteOp = "set"    // Set(Key, Value, TTL)
	OpIncrBy WriteOp = "incrby" // IncrBy(Key, Delta, TTL): TTL when it creates the key
	OpSetAdd WriteOp = "sadd"   // SetAdd(Key, TTL, Members...): TTL when it creates the key
	OpDelete WriteOp = "del"    // Delete(Key)
)

// Write is one buffered KV write.
type Write struct {
	Op      WriteOp
	Key     string
	Value   string
	Delta   int64
	TTL     time.Duration
	Members []string
	// Blind: the transaction did not read the key (IncrByBlind,
	// SetAddBlind), and wrote it no earlier.
	Blind bool
}

// Tx is the KV handle of a transactional step: reads go to the store and
// are remembered, writes are buffered and applied to the handle's own view,
// so the step reads its own writes. Its Effects are committed with the
// step's record by CommitStep. Scan, TTL and GetUnchecked read the store
// as it is and are not checked at commit. A Tx serves one step attempt from one goroutine.
type Tx struct {
	kv   KV
	keys map[string]*txKey
	fx   Effects
}

// txKey is the transaction's view of one key.
type txKey struct {
	// known: whether the key exists, and as a string its value or as a
	// set that it is one, are known.
	known  bool
	exists bool
	isSet  bool
	value  string
	// members known to be in (true) or out of (false) the set.
	members map[string]bool
	// card is the set's cardinality when cardKnown.
	card      int64
	cardKnown bool
	// blind: the key took a blind write while its state was unknown, so
	// its value or size is unknown to the transaction (members added
	// blindly are known to be in).
	blind bool
}

// errBlind is what reading a key's value or size after a blind write is.
func errBlind(key string) error {
	return fmt.Errorf("tx: %q: %w: read after a blind write", key, ErrInvalid)
}

// NewTx returns a transaction reading from kv.
func NewTx(kv KV) *Tx {
	return &Tx{kv: kv, keys: map[string]*txKey{}}
}

var _ KV = (*Tx)(nil)

// Effects returns what the transaction read and wrote.
func (t *Tx) Effects() Effects { return t.fx }

func (t *Tx) key(k string) *txKey {
	v := t.keys[k]
	if v == nil {
		v = &txKey{members: map[string]bool{}}
		t.keys[k] = v
	}
	return v
}

// loadString makes the key's existence and string value known, reading
// the store (and remembering the read) when they are not.
func (t *Tx) loadString(ctx context.Context, k string) (*txKey, error) {
	v := t.key(k)
	if v.blind {
		return nil, errBlind(k)
	}
	if v.known {
		if v.exists && v.isSet {
			return nil, fmt.Errorf("tx: %q: %w: key holds a set", k, ErrInvalid)
		}
		return v, nil
	}
	val, err := t.kv.Get(ctx, k)
	switch {
	case errors.Is(err, ErrNotFound):
		v.known, v.exists = true, false
		v.card, v.cardKnown = 0, true
	case err != nil:
		return nil, fmt.Errorf("tx: read %q: %w", k, err)
	default:
		v.known, v.exists, v.value = true, true, val
	}
	t.fx.Reads = append(t.fx.Reads, Read{Key: k, Kind: ReadString, Exists: v.exists, Value: val})
	return v, nil
}

// Get reads a string through the transaction's view.
func (t *Tx) Get(ctx context.Context, key string) (string, error) {
	v, err := t.loadString(ctx, key)
	if err != nil {
		return "", err
	}
	if !v.exists {
		return "", fmt.Errorf("tx: get %q: %w", key, ErrNotFound)
	}
	return v.value, nil
}

// Set buffers a string write.
func (t *Tx) Set(ctx context.Context, key, value string, ttl time.Duration) error {
	if _, err := KeyTTL(ttl); err != nil {
		return fmt.Errorf("tx: set %q: %w", key, err)
	}
	t.setString(key, value)
	t.fx.Writes = append(t.fx.Writes, Write{Op: OpSet, Key: key, Value: value, TTL: ttl})
	return nil
}

// setString makes the view of key the string value.
func (t *Tx) setString(key, value string) {
	t.keys[key] = &txKey{known: true, exists: true, value: value, members: map[string]bool{}}
}

// SetNX buffers a write when the view holds no key.
func (t *Tx) SetNX(ctx context.Context, key, value string, ttl time.Duration) (bool, error) {
	if _, err := KeyTTL(ttl); err != nil {
		return false, fmt.Errorf("tx: setnx %q: %w", key, err)
	}
	v := t.key(key)
	if !v.known {
		if _, err := t.loadString(ctx, key); err != nil {
			return false, err
		}
	}
	if v.exists {
		return false, nil
	}
	t.setString(key, value)
	t.fx.Writes = append(t.fx.Writes, Write{Op: OpSet, Key: key, Value: value, TTL: ttl})
	return true, nil
}

// Delete buffers the removal of keys.
func (t *Tx) Delete(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		t.keys[k] = &txKey{known: true, cardKnown: true, members: map[string]bool{}}
		t.fx.Writes = append(t.fx.Writes, Write{Op: OpDelete, Key: k})
	}
	return nil
}

// IncrBy buffers an increment and returns the value it leads to.
func (t *Tx) IncrBy(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if _, err := KeyTTL(ttl); err != nil {
		return 0, fmt.Errorf("tx: incrby %q: %w", key, err)
	}
	v, err := t.loadString(ctx, key)
	if err != nil {
		return 0, err
	}
	var cur int64
	if v.exists {
		if cur, err = strconv.ParseInt(v.value, 10, 64); err != nil {
			return 0, fmt.Errorf("tx: incrby %q: %w: value is not an integer", key, ErrInvalid)
		}
	}
	if (delta > 0 && cur > math.MaxInt64-delta) || (delta < 0 && cur < math.MinInt64-delta) {
		return 0, fmt.Errorf("tx: incrby %q: %w: increment would overflow", key, ErrInvalid)
	}
	n := cur + delta
	v.exists, v.value = true, strconv.FormatInt(n, 10)
	t.fx.Writes = append(t.fx.Writes, Write{Op: OpIncrBy, Key: key, Delta: delta, TTL: ttl})
	return n, nil
}

// SetAdd buffers members and reports how many the view did not hold.
func (t *Tx) SetAdd(ctx context.Context, key string, ttl time.Duration, members ...string) (int, error) {
	if _, err := KeyTTL(ttl); err != nil {
		return 0, fmt.Errorf("tx: sadd %q: %w", key, err)
	}
	if len(members) == 0 {
		return 0, nil
	}
	in, err := t.has(ctx, key, members)
	if err != nil {
		return 0, err
	}
	v := t.key(key)
	added := 0
	for i, m := range members {
		if in[i] || slices.Contains(members[:i], m) {
			continue
		}
		added++
		v.members[m] = true
	}
	// The key now holds a set; its other members and its size are
	// known only if they were before.
	v.known, v.exists, v.isSet = true, true, true
	v.card += int64(added)
	t.fx.Writes = append(t.fx.Writes, Write{Op: OpSetAdd, Key: key, TTL: ttl, Members: slices.Clone(members)})
	return added, nil
}

// IncrByBlind buffers an increment without reading the key: the commit
// checks nothing for it, so runs adding to one counter at once never
// conflict over it. Reading the key's value later in the transaction is
// refused, unless the transaction knew it already (IncrBy then). The
// commit refuses (store.ErrInvalid) a key that does not hold an integer.
func (t *Tx) IncrByBlind(ctx context.Context, key string, delta int64, ttl time.Duration) error {
	if _, err := KeyTTL(ttl); err != nil {
		return fmt.Errorf("tx: incrby %q: %w", key, err)
	}
	v := t.key(key)
	switch {
	case v.known && !v.blind:
		_, err := t.IncrBy(ctx, key, delta, ttl)
		return err
	case v.blind && len(v.members) > 0:
		return fmt.Errorf("tx: %q: %w: key holds a set", key, ErrInvalid)
	}
	v.blind = true
	t.fx.Writes = append(t.fx.Writes, Write{Op: OpIncrBy, Key: key, Delta: delta, TTL: ttl, Blind: true})
	return nil
}

// SetAddBlind buffers members without reading the set: the commit checks
// nothing for it. The members are known to be in the set afterwards;
// its size is refused, unless the transaction knew the key was absent.
// The commit refuses (store.ErrInvalid) a key that holds a string.
func (t *Tx) SetAddBlind(ctx context.Context, key string, ttl time.Duration, members ...string) error {
	if _, err := KeyTTL(ttl); err != nil {
		return fmt.Errorf("tx: sadd %q: %w", key, err)
	}
	v := t.key(key)
	switch {
	case len(members) == 0:
		return nil
	case v.known && !v.exists && !v.blind:
		_, err := t.SetAdd(ctx, key, ttl, members...)
		return err
	case v.known && v.exists && !v.isSet, v.blind && len(v.members) == 0:
		return fmt.Errorf("tx: %q: %w: key holds a string", key, ErrInvalid)
	}
	for _, m := range members {
		v.members[m] = true
	}
	v.blind = true
	t.fx.Writes = append(t.fx.Writes, Write{Op: OpSetAdd, Key: key, TTL: ttl, Members: slices.Clone(members), Blind: true})
	return nil
}

// has tells which members the view of the set at key holds, reading (and
// remembering) those it does not know.
func (t *Tx) has(ctx context.Context, key string, members []string) ([]bool, error) {
	v := t.key(key)
	if v.known && v.exists && !v.isSet {
		return nil, fmt.Errorf("tx: %q: %w: key holds a string", key, ErrInvalid)
	}
	in := make([]bool, len(members))
	var ask []string
	for i, m := range members {
		known, ok := v.members[m]
		switch {
		case ok:
			in[i] = known
		case v.known && !v.exists:
			// absent, or deleted in this transaction
		default:
			if !slices.Contains(ask, m) {
				ask = append(ask, m)
			}
		}
	}
	if len(ask) == 0 {
		return in, nil
	}
	got, err := t.kv.SetHas(ctx, key, ask...)
	if err != nil {
		return nil, fmt.Errorf("tx: read %q: %w", key, err)
	}
	for j, m := range ask {
		v.members[m] = got[j]
		t.fx.Reads = append(t.fx.Reads, Read{Key: key, Kind: ReadMember, Member: m, Exists: got[j]})
	}
	for i, m := range members {
		in[i] = v.members[m]
	}
	return in, nil
}

// SetHas tells which members the view of the set holds.
func (t *Tx) SetHas(ctx context.Context, key string, members ...string) ([]bool, error) {
	return t.has(ctx, key, members)
}

// loadCard makes the set's cardinality known.
func (t *Tx) loadCard(ctx context.Context, key string) (*txKey, error) {
	v := t.key(key)
	if v.known && v.exists && !v.isSet {
		return nil, fmt.Errorf("tx: %q: %w: key holds a string", key, ErrInvalid)
	}
	if v.blind {
		return nil, errBlind(key)
	}
	if v.cardKnown {
		return v, nil
	}
	n, err := t.kv.SetCard(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("tx: read %q: %w", key, err)
	}
	t.fx.Reads = append(t.fx.Reads, Read{Key: key, Kind: ReadCard, Card: n})
	// Members this transaction added were not in the store's count.
	v.card += n
	v.cardKnown = true
	return v, nil
}

// SetCard counts the view's members.
func (t *Tx) SetCard(ctx context.Context, key string) (int64, error) {
	v, err := t.loadCard(ctx, key)
	if err != nil {
		return 0, err
	}
	return v.card, nil
}

// SetMembers lists the view's members, sorted. The commit checks every
// member read and the count, so a member added meanwhile is a conflict.
func (t *Tx) SetMembers(ctx context.Context, key string) ([]string, error) {
	v, err := t.loadCard(ctx, key)
	if err != nil {
		return nil, err
	}
	if !(v.known && !v.exists) {
		stored, err := t.kv.SetMembers(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("tx: read %q: %w", key, err)
		}
		for _, m := range stored {
			if _, ok := v.members[m]; !ok {
				v.members[m] = true
				t.fx.Reads = append(t.fx.Reads, Read{Key: key, Kind: ReadMember, Member: m, Exists: true})
			}
		}
	}
	out := []string{}
	for m, in := range v.members {
		if in {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out, nil
}

// GetUnchecked reads a string from the store as it is, like Scan and TTL:
// the commit does not check it, so another run changing the key meanwhile
// is no conflict, and it sees none of the transaction's own buffered
// writes. It is for a value the body only acts on through checked reads
// or blind writes, such as a counter that other runs increment blindly
// (track-post-view reads its post's total so, then claims milestones with
// SetNX, whose read is checked).
func (t *Tx) GetUnchecked(ctx context.Context, key string) (string, error) {
	v, err := t.kv.Get(ctx, key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("tx: read %q: %w", key, err)
	}
	return v, err
}

// Scan reads the store as it is; the commit does not check it.
func (t *Tx) Scan(ctx context.Context, prefix, cursor string, count int) ([]string, string, error) {
	return t.kv.Scan(ctx, prefix, cursor, count)
}

// TTL reads the store as it is; the commit does not check it.
func (t *Tx) TTL(ctx context.Context, key string) (time.Duration, error) {
	return t.kv.TTL(ctx, key)
}

// BatchWrites records how the steps of a batch wrote each key, for the
// rules of MergeEffects: the op when only that blind op wrote it, ""
// otherwise.
type BatchWrites map[string]WriteOp

// BlindClash returns the first key that fx writes blindly after the batch
// wrote it otherwise ("" and false when none): a store checks a blind
// write's key before any write of the batch applies, so that write may
// only follow the same blind op.
func (b BatchWrites) BlindClash(fx Effects) (string, bool) {
	for _, w := range fx.Writes {
		if op, ok := b[w.Key]; ok && w.Blind && op != w.Op {
			return w.Key, true
		}
	}
	return "", false
}

// Add records fx's writes.
func (b BatchWrites) Add(fx Effects) {
	for _, w := range fx.Writes {
		op, seen := b[w.Key]
		switch {
		case !w.Blind, seen && op != w.Op:
			b[w.Key] = ""
		case !seen:
			b[w.Key] = w.Op
		}
	}
}

// MergeEffects joins the effects of a batch of steps (CommitSteps,
// Outcome.Steps) into the effects one atomic unit checks and applies:
// every read, then every write in order. That equals applying the steps
// one after another only when no step read a key an earlier step of the
// batch wrote (its read saw the store without that write), and when a
// blind write meets no earlier write of its key but the same blind op
// (BatchWrites.BlindClash). A batch breaking either rule is refused with
// ErrInvalid.
func MergeEffects(steps []StepCommit) (Effects, error) {
	if len(steps) == 1 {
		return steps[0].Effects, nil
	}
	var merged Effects
	written := BatchWrites{}
	for _, sc := range steps {
		fx := sc.Effects
		for _, r := range fx.Reads {
			if _, ok := written[r.Key]; ok {
				return Effects{}, fmt.Errorf("%w: step %q reads %q, which an earlier step of its batch wrote", ErrInvalid, sc.Step.ID, r.Key)
			}
		}
		if key, clash := written.BlindClash(fx); clash {
			return Effects{}, fmt.Errorf("%w: step %q writes %q blindly after an earlier step of its batch wrote it otherwise", ErrInvalid, sc.Step.ID, key)
		}
		written.Add(fx)
		merged.Reads = append(merged.Reads, fx.Reads...)
		merged.Writes = append(merged.Writes, fx.Writes...)
	}
	return merged, nil
}

// CheckCounted checks the batch of CommitStepsCount: it holds a step, and
// the effects of its last step are one blind increment, reading nothing
// and emitting nothing (ErrInvalid otherwise).
func CheckCounted(steps []StepCommit) error {
	if len(steps) == 0 {
		return fmt.Errorf("%w: a counted commit needs a step", ErrInvalid)
	}
	last := steps[len(steps)-1]
	fx := last.Effects
	if len(fx.Reads) != 0 || len(fx.Writes) != 1 || fx.Writes[0].Op != OpIncrBy || !fx.Writes[0].Blind || len(last.Emit) != 0 {
		return fmt.Errorf("%w: counted step %q: its only effect must be one blind increment", ErrInvalid, last.Step.ID)
	}
	return nil
}
