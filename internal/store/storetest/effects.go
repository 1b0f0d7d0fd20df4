package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var effectCases = []testCase{
	{"CommitAppliesWritesWithTheStep", testCommitApplies},
	{"TxReadsItsOwnWrites", testTxReadsOwnWrites},
	{"ConflictAppliesNothing", testCommitConflict},
	{"LostLeaseAppliesOnce", testCommitLeaseLost},
	{"BlindWritesNeverConflict", testCommitBlind},
	{"SetHas", testKVSetHas},
	{"UncheckedReadNeverConflicts", testTxGetUnchecked},
	{"CommitStepsIsOneUnit", testCommitSteps},
	{"FinishCommitsItsSteps", testFinishWithSteps},
	{"BatchRulesRefused", testBatchRules},
	{"CountedCommitRecordsTheValue", testCommitCounted},
	{"OverflowAppliesNothing", testCommitOverflow},
}

// commit commits the step id of l with the effects of tx.
func (b *bundle) commit(l *store.Lease, id string, tx *store.Tx) error {
	return b.store.CommitStep(b.ctx, l, b.doneStep(l, id), nil, tx.Effects())
}

// testCommitApplies: the writes of a committed transaction land with the
// step's record, and a ttl applies to the keys the commit creates only.
func testCommitApplies(t *testing.T, b *bundle) {
	b.incr(t, "views", 41, 0)
	b.setAdd(t, "day", 0, "old")
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Hour)

	tx := store.NewTx(b.store)
	n, err := tx.IncrBy(b.ctx, "views", 1, time.Hour)
	if err != nil || n != 42 {
		t.Fatalf("tx IncrBy(views) = %d, %v; want 42", n, err)
	}
	if n, err := tx.IncrBy(b.ctx, "views:day", 1, time.Hour); err != nil || n != 1 {
		t.Fatalf("tx IncrBy(views:day) = %d, %v; want 1", n, err)
	}
	if ok, err := tx.SetNX(b.ctx, "claim", "run", 0); err != nil || !ok {
		t.Fatalf("tx SetNX(claim) = %v, %v; want true", ok, err)
	}
	if added, err := tx.SetAdd(b.ctx, "day", time.Hour, "old", "new"); err != nil || added != 1 {
		t.Fatalf("tx SetAdd(day) = %d, %v; want 1", added, err)
	}
	if added, err := tx.SetAdd(b.ctx, "visitors", time.Hour, "v1", "v2", "v1"); err != nil || added != 2 {
		t.Fatalf("tx SetAdd(visitors) = %d, %v; want 2", added, err)
	}
	if err := tx.Set(b.ctx, "title", "Hello", 2*time.Hour); err != nil {
		t.Fatalf("tx Set: %v", err)
	}
	if _, err := b.store.Get(b.ctx, "claim"); err == nil {
		t.Fatal("a buffered write is visible before the commit")
	}
	if err := b.commit(l, "count", tx); err != nil {
		t.Fatalf("CommitStep: %v", err)
	}

	checkEqual(t, "views", b.kvGet(t, "views"), "42")
	checkEqual(t, "views:day", b.kvGet(t, "views:day"), "1")
	checkEqual(t, "claim", b.kvGet(t, "claim"), "run")
	checkEqual(t, "title", b.kvGet(t, "title"), "Hello")
	checkIDs(t, "day", b.setMembers(t, "day"), []string{"new", "old"})
	checkIDs(t, "visitors", b.setMembers(t, "visitors"), []string{"v1", "v2"})
	checkEqual(t, "ttl of an existing counter", b.ttl(t, "views"), time.Duration(0))
	checkEqual(t, "ttl of an existing set", b.ttl(t, "day"), time.Duration(0))
	checkEqual(t, "ttl of a created counter", b.ttl(t, "views:day"), time.Hour)
	checkEqual(t, "ttl of a created set", b.ttl(t, "visitors"), time.Hour)
	checkEqual(t, "ttl of a set string", b.ttl(t, "title"), 2*time.Hour)
	checkEqual(t, "ttl of a claim", b.ttl(t, "claim"), time.Duration(0))
	checkSteps(t, "Steps", b.steps(t, id), []store.Step{b.doneStep(l, "count")})

	// A created key expires by the store's clock.
	b.clock.Advance(time.Hour)
	_, err = b.store.Get(b.ctx, "views:day")
	wantErr(t, "Get(views:day) after its ttl", err, store.ErrNotFound)
}

// testTxReadsOwnWrites: inside a transaction every read sees the writes
// made before it, on top of the store.
func testTxReadsOwnWrites(t *testing.T, b *bundle) {
	b.kvSet(t, "s", "stored", 0)
	b.setAdd(t, "set", 0, "a", "b")
	tx := store.NewTx(b.store)
	if v, err := tx.Get(b.ctx, "s"); err != nil || v != "stored" {
		t.Fatalf("tx Get(s) = %q, %v; want stored", v, err)
	}
	if err := tx.Set(b.ctx, "s", "mine", 0); err != nil {
		t.Fatal(err)
	}
	if v, err := tx.Get(b.ctx, "s"); err != nil || v != "mine" {
		t.Errorf("tx Get(s) after Set = %q, %v; want mine", v, err)
	}
	if ok, err := tx.SetNX(b.ctx, "s", "again", 0); err != nil || ok {
		t.Errorf("tx SetNX(s) after Set = %v, %v; want false", ok, err)
	}
	if err := tx.Delete(b.ctx, "s"); err != nil {
		t.Fatal(err)
	}
	_, err := tx.Get(b.ctx, "s")
	wantErr(t, "tx Get(s) after Delete", err, store.ErrNotFound)
	if n, err := tx.IncrBy(b.ctx, "s", 5, 0); err != nil || n != 5 {
		t.Errorf("tx IncrBy(s) after Delete = %d, %v; want 5", n, err)
	}
	if added, err := tx.SetAdd(b.ctx, "set", 0, "b", "c"); err != nil || added != 1 {
		t.Errorf("tx SetAdd(set, b, c) = %d, %v; want 1", added, err)
	}
	if n, err := tx.SetCard(b.ctx, "set"); err != nil || n != 3 {
		t.Errorf("tx SetCard(set) = %d, %v; want 3", n, err)
	}
	members, err := tx.SetMembers(b.ctx, "set")
	if err != nil {
		t.Fatal(err)
	}
	checkIDs(t, "tx SetMembers(set)", members, []string{"a", "b", "c"})
	if in, err := tx.SetHas(b.ctx, "set", "c", "z"); err != nil || !in[0] || in[1] {
		t.Errorf("tx SetHas(set, c, z) = %v, %v; want [true false]", in, err)
	}
	_, err = tx.SetAdd(b.ctx, "s", 0, "x")
	wantErr(t, "tx SetAdd on a counter", err, store.ErrInvalid)
	if _, err := tx.SetAdd(b.ctx, "fresh", 0, "x"); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Get(b.ctx, "fresh")
	wantErr(t, "tx Get on a set it added to", err, store.ErrInvalid)
	if n, err := tx.SetCard(b.ctx, "fresh"); err != nil || n != 1 {
		t.Errorf("tx SetCard(fresh) = %d, %v; want 1", n, err)
	}

	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Hour)
	if err := b.commit(l, "mixed", tx); err != nil {
		t.Fatalf("CommitStep: %v", err)
	}
	checkEqual(t, "s", b.kvGet(t, "s"), "5")
	checkIDs(t, "set", b.setMembers(t, "set"), []string{"a", "b", "c"})
}

// testCommitConflict: a key the transaction read that changed before the
// commit refuses the commit with ErrConflict, and nothing of it lands:
// neither its writes nor its step. Each kind of read is checked.
func testCommitConflict(t *testing.T, b *bundle) {
	cases := []struct {
		name  string
		read  func(tx *store.Tx) error
		write func()
	}{
		{"counter", func(tx *store.Tx) error { _, err := tx.IncrBy(b.ctx, "c", 1, 0); return err },
			func() { b.incr(t, "c", 1, 0) }},
		{"absent key", func(tx *store.Tx) error { _, err := tx.SetNX(b.ctx, "claim", "mine", 0); return err },
			func() { b.kvSet(t, "claim", "theirs", 0) }},
		{"expired key", func(tx *store.Tx) error {
			if _, err := tx.Get(b.ctx, "short"); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			return nil
		},
			func() { b.clock.Advance(time.Minute) }},
		{"member", func(tx *store.Tx) error { _, err := tx.SetAdd(b.ctx, "set", 0, "m"); return err },
			func() { b.setAdd(t, "set", 0, "m") }},
		{"card", func(tx *store.Tx) error { _, err := tx.SetCard(b.ctx, "set2"); return err },
			func() { b.setAdd(t, "set2", 0, "other") }},
	}
	for _, c := range cases {
		b.incr(t, "c", 0, 0)
		b.kvSet(t, "short", "v", time.Minute)
		id := b.enqueueOne(t, "fn-a")
		l := b.claimOne(t, "w", id, time.Hour)
		tx := store.NewTx(b.store)
		if err := c.read(tx); err != nil {
			t.Fatalf("%s: tx read: %v", c.name, err)
		}
		if err := tx.Set(b.ctx, "witness:"+c.name, "written", 0); err != nil {
			t.Fatal(err)
		}
		c.write()
		wantErr(t, c.name+": CommitStep after a concurrent write", b.commit(l, "step", tx), store.ErrConflict)
		_, err := b.store.Get(b.ctx, "witness:"+c.name)
		wantErr(t, c.name+": Get(witness) after a conflict", err, store.ErrNotFound)
		checkEqual(t, c.name+": steps after a conflict", len(b.steps(t, id)), 0)

		// The same body run again commits.
		tx = store.NewTx(b.store)
		if err := c.read(tx); err != nil {
			t.Fatalf("%s: tx read again: %v", c.name, err)
		}
		if err := b.commit(l, "step", tx); err != nil {
			t.Fatalf("%s: CommitStep after a fresh read: %v", c.name, err)
		}
		checkEqual(t, c.name+": steps after the commit", len(b.steps(t, id)), 1)
	}
	checkEqual(t, "c after one outside increment and one commit", b.kvGet(t, "c"), "2")
}

// testCommitLeaseLost: a step's effects apply once across its commits,
// whoever makes them. A commit refused for a lost lease applies nothing
// where effects commit with their record (one atomic unit), and the new
// owner's commit applies them and records its step. Where they commit
// ahead of their record (EffectsAhead) the refused commit may have applied
// them: the new owner's commit then applies nothing more, records the
// step as the first commit made it and answers ErrSuperseded. Either way a
// commit by the first worker after the new owner's applies nothing.
func testCommitLeaseLost(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w1", id, time.Minute)
	step := func(l *store.Lease, output string) store.Step {
		s := b.doneStep(l, "count")
		s.Output = json.RawMessage(output)
		return s
	}
	incr := func() store.Effects {
		tx := store.NewTx(b.store)
		if _, err := tx.IncrBy(b.ctx, "views", 1, 0); err != nil {
			t.Fatal(err)
		}
		return tx.Effects()
	}
	first := incr()
	b.clock.Advance(2 * time.Minute)
	l2 := b.claimOne(t, "w2", id, time.Minute)
	wantErr(t, "CommitStep with a lost lease", b.store.CommitStep(b.ctx, l, step(l, `"first"`), nil, first), store.ErrLeaseLost)
	checkEqual(t, "steps after a refused commit", len(b.steps(t, id)), 0)
	err := b.store.CommitStep(b.ctx, l2, step(l2, `"second"`), nil, incr())
	recorded := `"second"`
	if b.effectsAhead() {
		// Decision: ahead of its record, the refused commit's effects
		// stand, and so does the record it would have made.
		wantErr(t, "the new owner's CommitStep after a refused one applied its effects", err, store.ErrSuperseded)
		recorded = `"first"`
	} else if err != nil {
		t.Fatalf("the new owner's CommitStep: %v", err)
	}
	checkEqual(t, "views after both commits", b.kvGet(t, "views"), "1")
	got := b.steps(t, id)
	if len(got) != 1 || got[0].ID != "count" || string(got[0].Output) != recorded {
		t.Fatalf("steps after both commits = %+v, want count with output %s", got, recorded)
	}
	wantErr(t, "the first worker's CommitStep once more", b.store.CommitStep(b.ctx, l, step(l, `"third"`), nil, incr()), store.ErrLeaseLost)
	checkEqual(t, "views after a third commit", b.kvGet(t, "views"), "1")
}

// testKVSetHas: membership of each member; none for an absent key; a
// string is the wrong type.
func testKVSetHas(t *testing.T, b *bundle) {
	b.setAdd(t, "set", 0, "a", "b")
	in, err := b.store.SetHas(b.ctx, "set", "a", "x", "b")
	if err != nil || len(in) != 3 || !in[0] || in[1] || !in[2] {
		t.Errorf("SetHas(set, a, x, b) = %v, %v; want [true false true]", in, err)
	}
	in, err = b.store.SetHas(b.ctx, "nothing", "a")
	if err != nil || len(in) != 1 || in[0] {
		t.Errorf("SetHas(absent, a) = %v, %v; want [false]", in, err)
	}
	b.kvSet(t, "str", "v", 0)
	_, err = b.store.SetHas(b.ctx, "str", "a")
	wantErr(t, "SetHas on a string", err, store.ErrInvalid)
}

// testCommitBlind: blind writes read nothing, so two transactions adding
// to one counter and one set both commit; a blind write the store cannot
// apply refuses the whole commit; the transaction refuses to read what it
// wrote blindly.
func testCommitBlind(t *testing.T, b *bundle) {
	b.incr(t, "hits", 10, 0)
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Hour)
	one, two := store.NewTx(b.store), store.NewTx(b.store)
	for i, tx := range []*store.Tx{one, two} {
		if err := tx.IncrByBlind(b.ctx, "hits", 1, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := tx.IncrByBlind(b.ctx, "fresh", 1, time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := tx.SetAddBlind(b.ctx, "seen", time.Hour, fmt.Sprint("m", i), "shared"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := one.Get(b.ctx, "hits")
	wantErr(t, "tx Get after a blind increment", err, store.ErrInvalid)
	_, err = one.SetCard(b.ctx, "seen")
	wantErr(t, "tx SetCard after a blind add", err, store.ErrInvalid)
	if in, err := one.SetHas(b.ctx, "seen", "shared"); err != nil || !in[0] {
		t.Errorf("tx SetHas(seen, shared) after a blind add = %v, %v; want [true]", in, err)
	}
	if err := b.commit(l, "one", one); err != nil {
		t.Fatalf("CommitStep(one): %v", err)
	}
	if err := b.commit(l, "two", two); err != nil {
		t.Fatalf("CommitStep(two) after a blind write to the same keys: %v", err)
	}
	checkEqual(t, "hits", b.kvGet(t, "hits"), "12")
	checkEqual(t, "fresh", b.kvGet(t, "fresh"), "2")
	checkIDs(t, "seen", b.setMembers(t, "seen"), []string{"m0", "m1", "shared"})
	checkEqual(t, "ttl of an existing counter", b.ttl(t, "hits"), time.Duration(0))
	checkEqual(t, "ttl of a created counter", b.ttl(t, "fresh"), time.Hour)
	checkEqual(t, "ttl of a created set", b.ttl(t, "seen"), time.Hour)

	b.kvSet(t, "word", "abc", 0)
	bad := store.NewTx(b.store)
	if err := bad.IncrByBlind(b.ctx, "hits", 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := bad.IncrByBlind(b.ctx, "word", 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := bad.IncrByBlind(b.ctx, "seen", 1, 0); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "CommitStep with blind increments of a word and a set", b.commit(l, "bad", bad), store.ErrInvalid)
	checkEqual(t, "hits after a refused commit", b.kvGet(t, "hits"), "12")
	checkEqual(t, "steps after a refused commit", len(b.steps(t, id)), 2)
}

// testTxGetUnchecked: GetUnchecked reads the store as it is, records no
// read (a write to the key before the commit is no conflict), and does
// not see the transaction's own buffered writes; an absent key is
// store.ErrNotFound.
func testTxGetUnchecked(t *testing.T, b *bundle) {
	b.incr(t, "total", 99, 0)
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Hour)
	tx := store.NewTx(b.store)
	if err := tx.IncrByBlind(b.ctx, "total", 1, 0); err != nil {
		t.Fatal(err)
	}
	v, err := tx.GetUnchecked(b.ctx, "total")
	if err != nil || v != "99" {
		t.Fatalf("GetUnchecked(total) = %q, %v; want the store's 99, not the buffered increment", v, err)
	}
	_, err = tx.GetUnchecked(b.ctx, "absent")
	wantErr(t, "GetUnchecked(absent)", err, store.ErrNotFound)
	checkEqual(t, "reads recorded by GetUnchecked", len(tx.Effects().Reads), 0)
	b.incr(t, "total", 5, 0) // another run, before the commit
	if err := b.commit(l, "count", tx); err != nil {
		t.Fatalf("CommitStep after a write to a key read unchecked: %v", err)
	}
	checkEqual(t, "total after 99, 5 outside and 1 committed", b.kvGet(t, "total"), "105")
	checkEqual(t, "steps after the commit", len(b.steps(t, id)), 1)
}

// testCommitSteps: CommitSteps records several steps with their effects,
// in order, as one unit: a conflict of the last step's read applies none
// of them, and the same batch with a fresh read applies all.
func testCommitSteps(t *testing.T, b *bundle) {
	b.incr(t, "total", 10, 0)
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Hour)

	batch := func() []store.StepCommit {
		one := store.NewTx(b.store)
		if err := one.IncrByBlind(b.ctx, "total", 1, 0); err != nil {
			t.Fatal(err)
		}
		if err := one.SetAddBlind(b.ctx, "day", time.Hour, "post"); err != nil {
			t.Fatal(err)
		}
		two := store.NewTx(b.store)
		if err := two.IncrByBlind(b.ctx, "total", 1, 0); err != nil {
			t.Fatal(err)
		}
		if ok, err := two.SetNX(b.ctx, "claim", "mine", 0); err != nil || !ok {
			t.Fatalf("SetNX(claim) = %v, %v", ok, err)
		}
		return []store.StepCommit{
			{Step: b.doneStep(l, "one"), Effects: one.Effects()},
			{Step: b.doneStep(l, "two"), Effects: two.Effects(),
				Emit: []store.Publication{{Event: store.Event{Name: "batch/emitted"}}}},
		}
	}
	steps := batch()
	b.kvSet(t, "claim", "theirs", 0)
	wantErr(t, "CommitSteps after the claim was taken", b.store.CommitSteps(b.ctx, l, steps), store.ErrConflict)
	checkEqual(t, "total after a refused batch", b.kvGet(t, "total"), "10")
	if n, err := b.store.SetCard(b.ctx, "day"); err != nil || n != 0 {
		t.Errorf("SetCard(day) after a refused batch = %d, %v; want 0", n, err)
	}
	checkEqual(t, "steps after a refused batch", len(b.steps(t, id)), 0)
	evs, err := b.store.ListEvents(b.ctx, store.EventFilter{Name: "batch/emitted"})
	if err != nil {
		t.Fatal(err)
	}
	checkEqual(t, "events emitted by a refused batch", len(evs.Items), 0)

	if err := b.store.Delete(b.ctx, "claim"); err != nil {
		t.Fatal(err)
	}
	if err := b.store.CommitSteps(b.ctx, l, batch()); err != nil {
		t.Fatalf("CommitSteps: %v", err)
	}
	checkEqual(t, "total after the batch", b.kvGet(t, "total"), "12")
	checkEqual(t, "claim after the batch", b.kvGet(t, "claim"), "mine")
	got := b.steps(t, id)
	if len(got) != 2 || got[0].ID != "one" || got[1].ID != "two" || got[1].Status != store.StatusCompleted {
		t.Fatalf("steps after the batch = %+v, want one and two completed, in order", got)
	}
	if evs, err = b.store.ListEvents(b.ctx, store.EventFilter{Name: "batch/emitted"}); err != nil || len(evs.Items) != 1 {
		t.Errorf("events emitted by the batch = %d, %v; want 1", len(evs.Items), err)
	}
	checkEqual(t, "run status after the batch", b.getRun(t, id).Status, store.StatusRunning)
}

// testFinishWithSteps: Outcome.Steps commit with the finish: a conflict
// leaves the run leased and unfinished with nothing applied; then the
// finish records the steps, their writes and the outcome at once.
func testFinishWithSteps(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Hour)
	outcome := func() store.Outcome {
		tx := store.NewTx(b.store)
		if _, err := tx.IncrBy(b.ctx, "counter", 1, 0); err != nil {
			t.Fatal(err)
		}
		return store.Outcome{Status: store.StatusCompleted, Output: json.RawMessage(`{"ok":true}`),
			Steps: []store.StepCommit{{Step: b.doneStep(l, "count"), Effects: tx.Effects()}}}
	}
	o := outcome()
	b.incr(t, "counter", 5, 0)
	wantErr(t, "Finish after a key its step read changed", b.store.Finish(b.ctx, l, o), store.ErrConflict)
	checkEqual(t, "counter after a refused finish", b.kvGet(t, "counter"), "5")
	checkEqual(t, "steps after a refused finish", len(b.steps(t, id)), 0)
	checkEqual(t, "run after a refused finish", b.getRun(t, id).Status, store.StatusRunning)

	if err := b.store.Finish(b.ctx, l, outcome()); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	checkEqual(t, "counter after the finish", b.kvGet(t, "counter"), "6")
	r := b.getRun(t, id)
	checkEqual(t, "run after the finish", r.Status, store.StatusCompleted)
	checkEqual(t, "output after the finish", string(r.Output), `{"ok":true}`)
	got := b.steps(t, id)
	if len(got) != 1 || got[0].ID != "count" || got[0].Status != store.StatusCompleted {
		t.Fatalf("steps after the finish = %+v, want count completed", got)
	}
	// A lost lease applies neither; ahead of their record (EffectsAhead)
	// the steps' effects may stand, and the run's next finish with the
	// same steps records them as that one made them, applies nothing
	// more and leaves the run unfinished (ErrSuperseded), to execute again.
	id2 := b.enqueueOne(t, "fn-a")
	l2 := b.claimOne(t, "w", id2, time.Minute)
	o2 := outcome()
	b.clock.Advance(2 * time.Minute)
	wantErr(t, "Finish with steps under a lapsed lease", b.store.Finish(b.ctx, l2, o2), store.ErrLeaseLost)
	checkEqual(t, "steps of the refused run", len(b.steps(t, id2)), 0)
	if !b.effectsAhead() {
		checkEqual(t, "counter after a refused finish", b.kvGet(t, "counter"), "6")
		return
	}
	checkEqual(t, "counter after a finish refused after its effects", b.kvGet(t, "counter"), "7")
	l3 := b.claimOne(t, "w", id2, time.Minute)
	wantErr(t, "Finish with the same steps again", b.store.Finish(b.ctx, l3, outcome()), store.ErrSuperseded)
	checkEqual(t, "counter after the finish that found them applied", b.kvGet(t, "counter"), "7")
	checkEqual(t, "steps recorded by it", len(b.steps(t, id2)), 1)
	checkEqual(t, "run after it", b.getRun(t, id2).Status, store.StatusRunning)
	b.finish(t, l3, store.Outcome{Status: store.StatusCompleted})
}

// testBatchRules: a batch whose later step read a key an earlier step
// wrote, or wrote it blindly after another kind of write, is refused
// whole (store.MergeEffects), and applies nothing.
func testBatchRules(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Hour)
	set := store.NewTx(b.store)
	if err := set.Set(b.ctx, "k", "text", 0); err != nil {
		t.Fatal(err)
	}
	read := store.NewTx(b.store)
	if _, err := read.Get(b.ctx, "k"); err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	blind := store.NewTx(b.store)
	if err := blind.IncrByBlind(b.ctx, "k", 1, 0); err != nil {
		t.Fatal(err)
	}
	for name, second := range map[string]store.Effects{"read after write": read.Effects(), "blind increment after set": blind.Effects()} {
		err := b.store.CommitSteps(b.ctx, l, []store.StepCommit{
			{Step: b.doneStep(l, "one"), Effects: set.Effects()},
			{Step: b.doneStep(l, "two"), Effects: second},
		})
		wantErr(t, "CommitSteps, "+name, err, store.ErrInvalid)
		_, err = b.store.Get(b.ctx, "k")
		wantErr(t, "Get(k) after a refused batch, "+name, err, store.ErrNotFound)
		checkEqual(t, "steps after a refused batch, "+name, len(b.steps(t, id)), 0)
	}
}

// countedStep is a counted step (store.CheckCounted) of l adding delta to
// key, whose output the store writes.
func (b *bundle) countedStep(t *testing.T, l *store.Lease, id, key string, delta int64, ttl time.Duration) store.StepCommit {
	t.Helper()
	tx := store.NewTx(b.store)
	if err := tx.IncrByBlind(b.ctx, key, delta, ttl); err != nil {
		t.Fatal(err)
	}
	return store.StepCommit{Step: b.doneStep(l, id), Effects: tx.Effects()}
}

// testCommitCounted: CommitStepsCount commits the steps before the
// counted one with it, answers with the value its increment left, and
// records that value as its output; two runs counting one key get
// consecutive values; the ttl applies to a key the count creates; a
// counted step whose key holds a set, or that reads, and a lost lease,
// apply nothing.
func testCommitCounted(t *testing.T, b *bundle) {
	b.incr(t, "views", 99, 0)
	one := b.enqueueOne(t, "fn-a")
	l1 := b.claimOne(t, "w", one, time.Hour)
	day := store.NewTx(b.store)
	if err := day.SetAddBlind(b.ctx, "day", time.Hour, "post"); err != nil {
		t.Fatal(err)
	}
	n, err := b.store.CommitStepsCount(b.ctx, l1, []store.StepCommit{
		{Step: b.doneStep(l1, "day"), Effects: day.Effects()},
		b.countedStep(t, l1, "count", "views", 1, time.Hour),
	})
	if err != nil || n != 100 {
		t.Fatalf("CommitStepsCount(views at 99 + 1) = %d, %v; want 100", n, err)
	}
	two := b.enqueueOne(t, "fn-a")
	l2 := b.claimOne(t, "w", two, time.Hour)
	// A name that reads like a placeholder for the value is kept as it is.
	odd := b.countedStep(t, l2, "count", "views", 1, 0)
	odd.Step.Name = "\x00count"
	if n, err := b.store.CommitStepsCount(b.ctx, l2, []store.StepCommit{odd}); err != nil || n != 101 {
		t.Fatalf("CommitStepsCount of a second run = %d, %v; want 101", n, err)
	}
	checkEqual(t, "views", b.kvGet(t, "views"), "101")
	checkEqual(t, "ttl of a counter that existed", b.ttl(t, "views"), time.Duration(0))
	checkIDs(t, "day", b.setMembers(t, "day"), []string{"post"})
	got := b.steps(t, one)
	if len(got) != 2 || got[0].ID != "day" || got[1].ID != "count" || got[1].Status != store.StatusCompleted {
		t.Fatalf("steps of the first run = %+v, want day and count completed, in order", got)
	}
	checkEqual(t, "recorded output of the first count", string(got[1].Output), "100")
	got = b.steps(t, two)
	if len(got) != 1 {
		t.Fatalf("steps of the second run = %+v, want count", got)
	}
	checkEqual(t, "recorded output of the second count", string(got[0].Output), "101")
	checkEqual(t, "recorded name of the second count", got[0].Name, "\x00count")

	if n, err := b.store.CommitStepsCount(b.ctx, l2, []store.StepCommit{b.countedStep(t, l2, "fresh", "fresh", -3, time.Hour)}); err != nil || n != -3 {
		t.Fatalf("CommitStepsCount of an absent key by -3 = %d, %v; want -3", n, err)
	}
	checkEqual(t, "ttl of a counter the count created", b.ttl(t, "fresh"), time.Hour)

	// Refused whole: a counted step of a set, one that reads, a lost lease.
	ofSet := []store.StepCommit{
		{Step: b.doneStep(l2, "before"), Effects: day.Effects()},
		b.countedStep(t, l2, "bad", "day", 1, 0),
	}
	b.setAdd(t, "other", 0, "x")
	_, err = b.store.CommitStepsCount(b.ctx, l2, []store.StepCommit{b.countedStep(t, l2, "bad", "other", 1, 0)})
	wantErr(t, "CommitStepsCount of a set", err, store.ErrInvalid)
	_, err = b.store.CommitStepsCount(b.ctx, l2, ofSet)
	wantErr(t, "CommitStepsCount of a set after a step", err, store.ErrInvalid)
	reads := b.countedStep(t, l2, "bad", "views", 1, 0)
	reads.Effects.Reads = []store.Read{{Key: "views", Kind: store.ReadString, Exists: true, Value: "101"}}
	_, err = b.store.CommitStepsCount(b.ctx, l2, []store.StepCommit{reads})
	wantErr(t, "CommitStepsCount of a step that reads", err, store.ErrInvalid)
	three := b.enqueueOne(t, "fn-a")
	l3 := b.claimOne(t, "w", three, time.Minute)
	b.clock.Advance(2 * time.Minute)
	l4 := b.claimOne(t, "w2", three, time.Minute)
	_, err = b.store.CommitStepsCount(b.ctx, l3, []store.StepCommit{b.countedStep(t, l3, "late", "views", 1, 0)})
	wantErr(t, "CommitStepsCount under a lapsed lease", err, store.ErrLeaseLost)
	checkEqual(t, "steps of the second run after the refused counts", len(b.steps(t, two)), 2)
	checkEqual(t, "steps of the third run after the refused count", len(b.steps(t, three)), 0)
	if !b.effectsAhead() {
		checkEqual(t, "views after the refused counts", b.kvGet(t, "views"), "101")
		return
	}
	// Ahead of its record (EffectsAhead) the refused count stands; the new
	// owner's count of the same step records the value it left.
	checkEqual(t, "views after a count refused after its increment", b.kvGet(t, "views"), "102")
	_, err = b.store.CommitStepsCount(b.ctx, l4, []store.StepCommit{b.countedStep(t, l4, "late", "views", 1, 0)})
	wantErr(t, "the new owner's CommitStepsCount of the step", err, store.ErrSuperseded)
	checkEqual(t, "views after it", b.kvGet(t, "views"), "102")
	got = b.steps(t, three)
	if len(got) != 1 || got[0].ID != "late" || string(got[0].Output) != "102" {
		t.Fatalf("steps of the third run = %+v, want late with output 102", got)
	}
}

// testCommitOverflow: a blind increment that would take its key past an
// int64 is refused with the whole commit (ErrInvalid), applying nothing:
// not the increments of the steps before it, nor one of two increments of
// a key whose sum overflows; increments that end within range commit.
func testCommitOverflow(t *testing.T, b *bundle) {
	id := b.enqueueOne(t, "fn-a")
	l := b.claimOne(t, "w", id, time.Hour)
	b.kvSet(t, "big", "9223372036854775806", 0)
	b.kvSet(t, "small", "-9223372036854775807", 0)
	blind := func(key string, deltas ...int64) store.Effects {
		tx := store.NewTx(b.store)
		for _, d := range deltas {
			if err := tx.IncrByBlind(b.ctx, key, d, 0); err != nil {
				t.Fatal(err)
			}
		}
		return tx.Effects()
	}
	for _, c := range []struct {
		what  string
		steps []store.StepCommit
	}{
		{"a later step's increment past the maximum", []store.StepCommit{
			{Step: b.doneStep(l, "one"), Effects: blind("views", 1)},
			{Step: b.doneStep(l, "two"), Effects: blind("big", 2)},
		}},
		{"two increments of one key past the maximum", []store.StepCommit{
			{Step: b.doneStep(l, "one"), Effects: blind("views", 1)},
			{Step: b.doneStep(l, "two"), Effects: blind("big", 1, 1)},
		}},
		{"an increment past the minimum", []store.StepCommit{
			{Step: b.doneStep(l, "one"), Effects: blind("views", 1)},
			{Step: b.doneStep(l, "two"), Effects: blind("small", -2)},
		}},
	} {
		wantErr(t, "CommitSteps with "+c.what, b.store.CommitSteps(b.ctx, l, c.steps), store.ErrInvalid)
		if v, err := b.store.Get(b.ctx, "views"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("views after a refused commit with %s = %q, %v; want absent", c.what, v, err)
		}
	}
	checkEqual(t, "big after the refused commits", b.kvGet(t, "big"), "9223372036854775806")
	checkEqual(t, "small after the refused commits", b.kvGet(t, "small"), "-9223372036854775807")
	checkEqual(t, "steps after the refused commits", len(b.steps(t, id)), 0)
	if err := b.store.CommitSteps(b.ctx, l, []store.StepCommit{
		{Step: b.doneStep(l, "one"), Effects: blind("views", 1)},
		{Step: b.doneStep(l, "two"), Effects: blind("big", 1)},
		{Step: b.doneStep(l, "three"), Effects: blind("small", -1)},
	}); err != nil {
		t.Fatalf("CommitSteps within range: %v", err)
	}
	checkEqual(t, "big at the maximum", b.kvGet(t, "big"), "9223372036854775807")
	checkEqual(t, "small at the minimum", b.kvGet(t, "small"), "-9223372036854775808")
	checkEqual(t, "views", b.kvGet(t, "views"), "1")
}
