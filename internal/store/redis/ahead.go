package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

// Effects ahead of their record. A step's KV effects commit with its
// record in one script (lua/savestep.lua) wherever one script may touch
// both: on one server, and on a Cluster whose engine has one partition, its
// slot holding the site keys too (inEngineSlot). A partitioned store on a
// Cluster keeps a run's records in its partition's slot, which the site
// keys cannot share with every partition; there a commit with effects is
// two scripts and a receipt (docs/engine.md, "Spreading the engine over
// slots"):
//
//  1. lua/effects.lua, in the site keys' slot, checks the reads, applies
//     the writes and keeps a receipt (keyed by run and first step) holding
//     the value the last increment left and the arguments of the steps'
//     record, unless the receipt is there already: then it applies nothing
//     and answers with it;
//  2. lua/savestep.lua records the steps in the run's partition under the
//     lease, from the receipt's arguments when it was there (those of the
//     execution that applied the effects: a later one may have read its
//     writes and decided otherwise);
//  3. the receipt becomes a tombstone (an empty string), kept for
//     receiptTTL: a worker whose lease lapsed while its commit was under
//     way (a zombie) and that commits after the run's new owner finds it
//     and applies nothing. The next effects call in the receipt's slot
//     makes the tombstone, so that a commit costs two round trips, not
//     three. Until then the receipt holds its arguments, which a zombie
//     would only record again under a lease it no longer holds (refused):
//     the tombstone saves memory, not correctness.
//
// A commit that found a receipt answers store.ErrSuperseded: the run's
// steps are those recorded, and the worker hands the run back to execute it
// again from them. A commit refused for a lost lease may have applied its
// effects: the run's next owner adopts them, so they apply once across the
// step's commits.

// receiptTTL is how long the receipt of effects applied ahead of their
// record is kept while the steps are not recorded: the run's next owner
// finds it however late it comes (every daemon down for a while), unless
// the run waits longer than this, when it would apply them again; a run
// cancelled meanwhile leaves it to expire. tombstoneTTL is how long it is
// kept once they are: only a worker whose commit reaches Redis more than
// this long after its lease lapsed could apply them again, and the engine
// commits a step within its store call timeout (seconds) of the step's
// body ending; a call whose deadline passed (a process stopped meanwhile)
// is not sent.
const (
	receiptTTL   = 30 * 24 * time.Hour
	tombstoneTTL = time.Hour
)

// noEffects is the effects argument of a savestep call without effects.
const noEffects = `{"r":[],"w":[]}`

// flagArg is a script's flag argument: "1" or "0".
func flagArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// EffectsAhead reports whether a step's KV effects commit ahead of its
// record, in a script of their own (a partitioned store on a Redis
// Cluster): a commit refused for a lost lease may then have applied them,
// and the step's next commit adopts them (store.ErrSuperseded).
func (s *Store) EffectsAhead() bool { return s.effectsAhead }

// ahead reports whether steps commit their effects ahead of their record.
func (s *Store) ahead(steps []store.StepCommit) bool {
	if !s.effectsAhead {
		return false
	}
	for i := range steps {
		if !steps[i].Effects.Empty() {
			return true
		}
	}
	return false
}

// receipt is the key of the receipt of the effects of the steps from
// stepID of run runID, in siteKey's slot.
func (k keys) receipt(siteKey, runID, stepID string) string {
	return k.base + "receipt:{" + hashed(siteKey) + "}:" + runID + ":" + stepID
}

// commitAhead commits steps with their effects applied ahead of their
// record, and the run's finish when finish is set. finish returns the
// savestep script's finish argument; it is called only once the effects
// applied, so that what it publishes in other partitions (emitArgs) is
// not published for a finish that finds a receipt and is dropped. counted
// is CommitStepsCount's, whose value it returns.
func (s *Store) commitAhead(ctx context.Context, l *store.Lease, steps []store.StepCommit, finish func() (string, error), counted bool) (int64, error) {
	fx, err := store.MergeEffects(steps)
	if err != nil {
		return 0, err
	}
	receipt := s.keys.receipt(s.keys.siteKey(fx.Keys()[0]), l.RunID, steps[0].Step.ID)
	keys, fxDoc, err := s.effectsArg(receipt, fx)
	if err != nil {
		return 0, err
	}
	if err := s.inSlotOf(keys[0], keys[1:]); err != nil {
		return 0, err
	}
	now := s.clock.Now()
	recArgs := make([]any, 0, 7*len(steps))
	for _, sc := range steps {
		if recArgs, err = s.appendStepArgs(ctx, recArgs, l, sc, now); err != nil {
			return 0, err
		}
	}
	recs := make([]string, len(recArgs))
	for i, a := range recArgs {
		recs[i] = a.(string)
	}
	kept, err := json.Marshal(recs)
	if err != nil {
		return 0, err
	}
	done := s.recorded.take(slot(receipt))
	keys = append(keys, done...)
	res, err := s.acked(ctx, scriptEffects, keys, now.UnixMilli(), fxDoc, string(kept), receiptTTL.Milliseconds(), len(done),
		flagArg(counted), tombstoneTTL.Milliseconds()).Slice()
	if err != nil {
		return 0, err
	}
	if len(res) != 2 {
		return 0, fmt.Errorf("unexpected reply %v", res)
	}
	// value is the counted value of the commit that applied the effects,
	// "" when it was not counted.
	applied, value := num(res[0]) == 1, str(res[1])
	fin := ""
	if applied && finish != nil {
		if fin, err = finish(); err != nil {
			return 0, err
		}
	}
	if !applied {
		// The run executes again from the steps recorded: those of the
		// receipt, or none more once it is a tombstone (the call still
		// tells a lost lease from a run to hand back).
		recs = nil
		if value != "" {
			var doc string
			value, doc, _ = strings.Cut(value, "\n")
			if err := json.Unmarshal([]byte(doc), &recs); err != nil || len(recs)%7 != 0 {
				return 0, fmt.Errorf("receipt %s: %q", receipt, doc)
			}
		}
	}
	args := make([]any, 0, 6+len(recs))
	args = append(args, now.UnixMilli(), l.RunID, l.Token, noEffects, fin, len(recs)/7)
	for i, a := range recs {
		if value != "" && i == len(recs)-6 { // the counted step's record
			a = strings.Replace(a, `"o":`+countMark, `"o":`+value, 1)
		}
		args = append(args, a)
	}
	if err := s.acked(ctx, scriptSaveStep, []string{s.keys.at(l.RunID)}, args...).Err(); err != nil {
		return 0, err
	}
	if len(recs) > 0 {
		s.recorded.add(receipt)
	}
	if !applied {
		return 0, store.ErrSuperseded
	}
	if !counted {
		return 0, nil
	}
	return strconv.ParseInt(value, 10, 64)
}

// maxRecorded bounds the receipts waiting to become tombstones, and
// recordedPerCall those one effects call takes: a receipt past the bound
// keeps its arguments until its TTL.
const (
	maxRecorded     = 1024
	recordedPerCall = 64
)

// recordedReceipts are the receipts of commits whose steps are recorded
// since, each to become a tombstone with the next effects call in its
// slot (lua/effects.lua), kept with their slot.
type recordedReceipts struct {
	mu      sync.Mutex
	pending []recordedReceipt
}

type recordedReceipt struct {
	slot int
	key  string
}

func (r *recordedReceipts) add(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) < maxRecorded {
		r.pending = append(r.pending, recordedReceipt{slot(key), key})
	}
}

// take removes and returns up to recordedPerCall receipts in slot sl.
func (r *recordedReceipts) take(sl int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	kept := r.pending[:0]
	for _, rc := range r.pending {
		if len(out) < recordedPerCall && rc.slot == sl {
			out = append(out, rc.key)
		} else {
			kept = append(kept, rc)
		}
	}
	r.pending = kept
	return out
}
