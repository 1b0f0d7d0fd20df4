package storetest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/dcyfr/cyberdrew/internal/store"
)

var basicCases = []testCase{
	{"KindAndPing", testKindAndPing},
}

func testKindAndPing(t *testing.T, b *bundle) {
	if b.store.Kind() == "" {
		t.Errorf("Kind() is empty")
	}
	if err := b.store.Ping(b.ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

var eventCases = []testCase{
	{"PublishStoresAllFields", pinned(testPublishStoresAllFields)},
	{"GetEventUnknown", testGetEventUnknown},
	{"PublishAssignsMissingID", testPublishAssignsMissingID},
	{"PublishInvalidAllOrNothing", testPublishInvalid},
	{"ClientIDDedup", pinned(testClientIDDedup)},
	{"ClientIDDedupWithinBatch", pinned(testClientIDDedupWithinBatch)},
	{"StoredEventIDIsDuplicate", testStoredEventIDIsDuplicate},
	{"BatchOrderPreserving", testBatchOrderPreserving},
	{"ListEventsNewestFirstAndFilters", testListEventsFilters},
	{"ListEventsPaging", testListEventsPaging},
	{"ListMalformedCursor", testListMalformedCursor},
}

func testPublishStoresAllFields(t *testing.T, b *bundle) {
	b.clock.Advance(1500 * time.Millisecond)
	ev := store.Event{
		ID:       b.id(),
		ClientID: "client-1",
		Name:     "app/user.created",
		Data:     json.RawMessage(`{"id": 42, "tags": ["a", "b"], "nested": {"ok": true}}`),
		User:     json.RawMessage(`{"email": "someone@example.com"}`),
		TS:       b.now().Add(-5 * time.Second).UnixMilli(),
		Version:  "2026-01-01.1",
	}
	got := b.publish(t, store.Publication{Event: ev, ClientIDTTL: 24 * time.Hour})[0]
	checkEqual(t, "Published.EventID", got.EventID, ev.ID)
	checkEqual(t, "Published.Duplicate", got.Duplicate, false)
	checkEqual(t, "len(Published.Runs)", len(got.Runs), 0)

	// Decision: the store stamps ReceivedAt with its clock when the event
	// is stored, and keeps the caller's (intake's) ULID as the event id.
	e := b.getEvent(t, ev.ID)
	checkEqual(t, "ID", e.ID, ev.ID)
	checkEqual(t, "ClientID", e.ClientID, ev.ClientID)
	checkEqual(t, "Name", e.Name, ev.Name)
	checkJSON(t, "Data", e.Data, ev.Data)
	checkJSON(t, "User", e.User, ev.User)
	checkEqual(t, "TS", e.TS, ev.TS)
	checkEqual(t, "Version", e.Version, ev.Version)
	checkTime(t, "ReceivedAt", e.ReceivedAt, b.now())

	// An event without user or version reads back without them.
	plain := b.event("app/plain", `{"n":1}`)
	b.publishOne(t, plain)
	p := b.getEvent(t, plain.ID)
	if len(p.User) != 0 && string(p.User) != "null" {
		t.Errorf("User of an event without user = %s, want empty", p.User)
	}
	checkEqual(t, "Version of an event without v", p.Version, "")
	checkEqual(t, "ClientID of an event without id", p.ClientID, "")
	checkJSON(t, "Data", p.Data, plain.Data)
}

func testGetEventUnknown(t *testing.T, b *bundle) {
	_, err := b.store.GetEvent(b.ctx, b.id())
	wantErr(t, "GetEvent(unknown ulid)", err, store.ErrNotFound)
	_, err = b.store.GetEvent(b.ctx, "no such event")
	wantErr(t, "GetEvent(garbage id)", err, store.ErrNotFound)
}

func testPublishAssignsMissingID(t *testing.T, b *bundle) {
	// Decision: a caller may leave Event.ID empty; the store then assigns
	// a ULID of its own.
	ev := b.event("app/anonymous", `{"n":1}`)
	ev.ID = ""
	p := b.publishOne(t, ev, b.spec("fn-a"))
	if _, err := ulid.ParseStrict(p.EventID); err != nil {
		t.Fatalf("assigned EventID %q is not a ULID: %v", p.EventID, err)
	}
	checkEqual(t, "Name", b.getEvent(t, p.EventID).Name, ev.Name)
	checkEqual(t, "run EventID", b.getRun(t, p.Runs[0].ID).EventID, p.EventID)
}

func testPublishInvalid(t *testing.T, b *bundle) {
	tests := []struct {
		name string
		edit func(p *store.Publication)
	}{
		{"empty event name", func(p *store.Publication) { p.Event.Name = "" }},
		{"data not JSON", func(p *store.Publication) { p.Event.Data = json.RawMessage(`{"a":`) }},
		{"user not JSON", func(p *store.Publication) { p.Event.User = json.RawMessage(`nope`) }},
		{"run without function", func(p *store.Publication) { p.Runs[0].FunctionID = "" }},
		{"run without id", func(p *store.Publication) { p.Runs[0].ID = "" }},
	}
	for _, tt := range tests {
		good := b.event("app/good", `{}`)
		goodRun := b.spec("fn-a")
		bad := store.Publication{Event: b.event("app/bad", `{}`), Runs: []store.RunSpec{b.spec("fn-a")}}
		tt.edit(&bad)
		_, err := b.store.Publish(b.ctx, []store.Publication{{Event: good, Runs: []store.RunSpec{goodRun}}, bad})
		wantErr(t, "Publish with "+tt.name, err, store.ErrInvalid)

		// All or nothing: the valid publication before it is not stored.
		_, err = b.store.GetEvent(b.ctx, good.ID)
		wantErr(t, tt.name+": GetEvent of the good event of a refused batch", err, store.ErrNotFound)
		_, err = b.store.GetRun(b.ctx, goodRun.ID)
		wantErr(t, tt.name+": GetRun of the good run of a refused batch", err, store.ErrNotFound)
	}
	if evs := b.allEvents(t, store.EventFilter{}); len(evs) != 0 {
		t.Errorf("events after refused batches = %v, want none", eventIDs(evs))
	}
	if runs := b.allRuns(t, store.RunFilter{}); len(runs) != 0 {
		t.Errorf("runs after refused batches = %v, want none", runIDs(runs))
	}
}

func testClientIDDedup(t *testing.T, b *bundle) {
	const ttl = 24 * time.Hour
	pub := func(clientID string) (store.Event, store.RunSpec, store.Published) {
		ev := b.event("app/order.placed", `{"order":1}`)
		ev.ClientID = clientID
		spec := b.spec("fn-a")
		got := b.publish(t, store.Publication{Event: ev, ClientIDTTL: ttl, Runs: []store.RunSpec{spec}})[0]
		return ev, spec, got
	}

	first, firstSpec, p1 := pub("order-1")
	checkEqual(t, "first Duplicate", p1.Duplicate, false)
	checkEqual(t, "first EventID", p1.EventID, first.ID)
	checkIDs(t, "first Runs", refIDs(p1.Runs), []string{firstSpec.ID})
	byClientID := func(what, clientID, want string) {
		t.Helper()
		ev, err := b.store.EventByClientID(b.ctx, clientID)
		if want == "" {
			wantErr(t, what, err, store.ErrNotFound)
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		checkEqual(t, what, ev.ID, want)
		checkEqual(t, what+" ClientID", ev.ClientID, clientID)
	}
	byClientID("EventByClientID(first)", "order-1", first.ID)
	byClientID("EventByClientID(unknown)", "order-9", "")

	b.clock.Advance(time.Hour)
	second, secondSpec, p2 := pub("order-1")
	checkEqual(t, "second Duplicate", p2.Duplicate, true)
	checkEqual(t, "second EventID", p2.EventID, first.ID)
	checkEqual(t, "len(second Runs)", len(p2.Runs), 0)
	_, err := b.store.GetEvent(b.ctx, second.ID)
	wantErr(t, "GetEvent(duplicate)", err, store.ErrNotFound)
	_, err = b.store.GetRun(b.ctx, secondSpec.ID)
	wantErr(t, "GetRun(run of duplicate)", err, store.ErrNotFound)
	checkIDs(t, "events after duplicate", eventIDs(b.allEvents(t, store.EventFilter{})), []string{first.ID})
	checkIDs(t, "runs after duplicate", runIDs(b.allRuns(t, store.RunFilter{})), []string{firstSpec.ID})

	// Another client id and no client id at all are never duplicates.
	other, _, p3 := pub("order-2")
	checkEqual(t, "other client id Duplicate", p3.Duplicate, false)
	checkEqual(t, "other client id EventID", p3.EventID, other.ID)
	for range 2 {
		ev, _, p := pub("")
		checkEqual(t, "no client id Duplicate", p.Duplicate, false)
		checkEqual(t, "no client id EventID", p.EventID, ev.ID)
	}

	byClientID("EventByClientID(after duplicate)", "order-1", first.ID)

	// Once ClientIDTTL has passed since the first, the id is new again.
	b.clock.Advance(ttl - time.Hour + time.Second)
	byClientID("EventByClientID(expired)", "order-1", "")
	third, thirdSpec, p4 := pub("order-1")
	byClientID("EventByClientID(after ttl)", "order-1", third.ID)
	checkEqual(t, "after ttl Duplicate", p4.Duplicate, false)
	checkEqual(t, "after ttl EventID", p4.EventID, third.ID)
	checkIDs(t, "after ttl Runs", refIDs(p4.Runs), []string{thirdSpec.ID})
	b.getEvent(t, third.ID)
	checkEqual(t, "after ttl run status", b.getRun(t, thirdSpec.ID).Status, store.StatusQueued)
}

func testClientIDDedupWithinBatch(t *testing.T, b *bundle) {
	e1 := b.event("app/a", `{"n":1}`)
	e1.ClientID = "same"
	e2 := b.event("app/a", `{"n":2}`)
	e2.ClientID = "same"
	s1, s2 := b.spec("fn-a"), b.spec("fn-a")
	got := b.publish(t,
		store.Publication{Event: e1, ClientIDTTL: time.Hour, Runs: []store.RunSpec{s1}},
		store.Publication{Event: e2, ClientIDTTL: time.Hour, Runs: []store.RunSpec{s2}},
	)
	checkEqual(t, "[0].Duplicate", got[0].Duplicate, false)
	checkEqual(t, "[1].Duplicate", got[1].Duplicate, true)
	checkEqual(t, "[1].EventID", got[1].EventID, e1.ID)
	checkEqual(t, "len([1].Runs)", len(got[1].Runs), 0)
	_, err := b.store.GetRun(b.ctx, s2.ID)
	wantErr(t, "GetRun(run of in-batch duplicate)", err, store.ErrNotFound)
	checkJSON(t, "stored data", b.getEvent(t, e1.ID).Data, e1.Data)
}

// A retried request whose event ids derive from the same seed publishes an
// id that is already stored: a duplicate, with no runs and nothing changed.
func testStoredEventIDIsDuplicate(t *testing.T, b *bundle) {
	ev := b.event("app/order.placed", `{"order":1}`)
	spec := b.spec("fn-a")
	first := b.publish(t, store.Publication{Event: ev, Runs: []store.RunSpec{spec}})[0]
	checkEqual(t, "first Duplicate", first.Duplicate, false)

	b.clock.Advance(time.Minute)
	retry := ev
	retry.Data = json.RawMessage(`{"order":2}`)
	again := b.spec("fn-a")
	got := b.publish(t, store.Publication{Event: retry, Runs: []store.RunSpec{again}})[0]
	checkEqual(t, "retry Duplicate", got.Duplicate, true)
	checkEqual(t, "retry EventID", got.EventID, ev.ID)
	checkEqual(t, "len(retry Runs)", len(got.Runs), 0)
	_, err := b.store.GetRun(b.ctx, again.ID)
	wantErr(t, "GetRun(run of the retry)", err, store.ErrNotFound)
	checkJSON(t, "stored data", b.getEvent(t, ev.ID).Data, ev.Data)
	checkIDs(t, "runs", runIDs(b.allRuns(t, store.RunFilter{})), []string{spec.ID})
}

func testBatchOrderPreserving(t *testing.T, b *bundle) {
	var pubs []store.Publication
	for i := range 6 {
		ev := b.event("app/batch", fmt.Sprintf(`{"i":%d}`, i))
		pubs = append(pubs, store.Publication{Event: ev, Runs: []store.RunSpec{b.spec("fn-a"), b.spec("fn-b")}})
	}
	got := b.publish(t, pubs...)
	var wantEvents []string
	for i, p := range pubs {
		wantEvents = append(wantEvents, p.Event.ID)
		checkEqual(t, fmt.Sprintf("EventID of publication %d", i), got[i].EventID, p.Event.ID)
		checkIDs(t, fmt.Sprintf("Runs of publication %d", i), refIDs(got[i].Runs), []string{p.Runs[0].ID, p.Runs[1].ID})
		for j, ref := range got[i].Runs {
			checkRef(t, "RunRef", ref, store.RunRef{ID: p.Runs[j].ID, FunctionID: p.Runs[j].FunctionID, Status: store.StatusQueued})
			checkEqual(t, "run EventID", b.getRun(t, ref.ID).EventID, p.Event.ID)
		}
	}
	// Decision: events received at the same instant list newest first by
	// id, so a batch lists in reverse order of publication.
	checkIDs(t, "ListEvents", eventIDs(b.allEvents(t, store.EventFilter{})), reversed(wantEvents))
}

func testListEventsFilters(t *testing.T, b *bundle) {
	names := []string{"a/x", "b/y", "a/x", "a/x", "b/y"}
	ids := make([]string, len(names))
	at := make([]time.Time, len(names))
	for i, n := range names {
		if i > 0 {
			b.clock.Advance(time.Second)
		}
		ev := b.event(n, `{}`)
		b.publishOne(t, ev)
		ids[i], at[i] = ev.ID, b.now()
	}
	// ids[i] received at start+i s.
	tests := []struct {
		name string
		f    store.EventFilter
		want []int
	}{
		{"all", store.EventFilter{}, []int{4, 3, 2, 1, 0}},
		{"name", store.EventFilter{Name: "a/x"}, []int{3, 2, 0}},
		{"unknown name", store.EventFilter{Name: "a/*"}, nil},
		// Decision: Since is inclusive and Until exclusive, as in RunFilter.
		{"since", store.EventFilter{Since: at[1]}, []int{4, 3, 2, 1}},
		{"until", store.EventFilter{Until: at[3]}, []int{2, 1, 0}},
		{"since until name", store.EventFilter{Name: "a/x", Since: at[1], Until: at[4]}, []int{3, 2}},
	}
	for _, tt := range tests {
		var want []string
		for _, i := range tt.want {
			want = append(want, ids[i])
		}
		checkIDs(t, "ListEvents "+tt.name, eventIDs(b.allEvents(t, tt.f)), want)
	}

	// Limit and cursor: 2, 2, 1, the last page without a cursor.
	p := b.listEvents(t, store.EventFilter{Limit: 2})
	checkIDs(t, "page 1", eventIDs(p.Items), []string{ids[4], ids[3]})
	if p.Cursor == "" {
		t.Fatalf("page 1 has no cursor")
	}
	p = b.listEvents(t, store.EventFilter{Limit: 2, Cursor: p.Cursor})
	checkIDs(t, "page 2", eventIDs(p.Items), []string{ids[2], ids[1]})
	if p.Cursor == "" {
		t.Fatalf("page 2 has no cursor")
	}
	p = b.listEvents(t, store.EventFilter{Limit: 2, Cursor: p.Cursor})
	checkIDs(t, "page 3", eventIDs(p.Items), []string{ids[0]})
	checkEqual(t, "page 3 cursor", p.Cursor, "")

	// Decision: a page that ends the listing has no cursor even when full,
	// so clients never fetch an empty trailing page.
	p = b.listEvents(t, store.EventFilter{Name: "b/y", Limit: 2})
	checkIDs(t, "full last page", eventIDs(p.Items), []string{ids[4], ids[1]})
	checkEqual(t, "full last page cursor", p.Cursor, "")
}

func testListEventsPaging(t *testing.T, b *bundle) {
	// 24 events, three per instant, so paging must break ties too.
	var want []string
	for i := range 8 {
		if i > 0 {
			b.clock.Advance(time.Millisecond)
		}
		var pubs []store.Publication
		for range 3 {
			pubs = append(pubs, store.Publication{Event: b.event("app/page", `{}`)})
		}
		pubs = append(pubs, store.Publication{Event: b.event("app/other", `{}`)})
		for _, p := range b.publish(t, pubs...)[:3] {
			want = append(want, p.EventID)
		}
	}
	want = reversed(want)
	for _, limit := range []int{1, 5, 7, 24, 100} {
		f := store.EventFilter{Name: "app/page", Limit: limit}
		var got []string
		for range 100 {
			p := b.listEvents(t, f)
			if len(p.Items) > limit {
				t.Fatalf("limit %d: page of %d events", limit, len(p.Items))
			}
			got = append(got, eventIDs(p.Items)...)
			if p.Cursor == "" {
				break
			}
			f.Cursor = p.Cursor
		}
		checkIDs(t, fmt.Sprintf("paged ListEvents with limit %d", limit), got, want)
	}
}

func testListMalformedCursor(t *testing.T, b *bundle) {
	b.enqueueOne(t, "fn-a")
	for _, c := range []string{"garbage!!", "%%%", "{}"} {
		_, err := b.store.ListEvents(b.ctx, store.EventFilter{Cursor: c})
		wantErr(t, "ListEvents(cursor "+c+")", err, store.ErrInvalid)
		_, err = b.store.ListRuns(b.ctx, store.RunFilter{Cursor: c})
		wantErr(t, "ListRuns(cursor "+c+")", err, store.ErrInvalid)
	}
}
