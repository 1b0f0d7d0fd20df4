package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/engine/enginetest"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/backendtest"
)

// start is the fake clock's start: a Wednesday.
var start = time.Date(2025, 3, 12, 10, 30, 0, 0, time.UTC)

// bundle is one test's real store, engine and workers.
type bundle struct {
	ctx     context.Context
	st      store.Store
	eng     *engine.Engine
	clock   *clockwork.FakeClock
	changes <-chan store.Change
	native  *backendtest.Native // nil but on Redis
}

// setup opens a fresh store on be, registers jobs.Functions(deps) with
// deps completed by configure, and starts a worker pool.
func setup(t *testing.T, be backendtest.Backend, configure func(st store.Store, clock *clockwork.FakeClock, d *jobs.Deps)) *bundle {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	clock := clockwork.NewFakeClockAt(start)
	st, native := be.Open(t, ctx, clock)
	deps := jobs.Deps{KV: st, Clock: clock, Mailer: jobs.Outbox{Dir: filepath.Join(t.TempDir(), "outbox")}}
	if configure != nil {
		configure(st, clock, &deps)
	}
	eng, err := engine.New(engine.Options{Store: st, Clock: clock, Validate: jobs.Validate, Jitter: func(d time.Duration) time.Duration { return d }})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Register(jobs.Functions(deps)...); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Stop(context.Background()) })
	b := &bundle{ctx: ctx, st: st, eng: eng, clock: clock, changes: st.Subscribe(ctx), native: native}
	enginetest.StartPool(t, ctx, eng, engine.PoolOptions{Workers: 16, LeaseTTL: time.Hour})
	return b
}

// waitFor re-checks cond after every store change until it holds.
func (b *bundle) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	backendtest.WaitFor(t, b.changes, 30*time.Second, what, cond, nil)
}

func (b *bundle) run(t *testing.T, id string) store.Run {
	t.Helper()
	r, err := b.st.GetRun(b.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (b *bundle) waitStatus(t *testing.T, id string, want store.Status) store.Run {
	t.Helper()
	var r store.Run
	b.waitFor(t, fmt.Sprintf("run %s to be %s", id, want), func() bool {
		r = b.run(t, id)
		return r.Status == want
	})
	return r
}

// send publishes one event and returns the id of its run of fn.
func (b *bundle) send(t *testing.T, name, data, fn string) string {
	t.Helper()
	acc, err := b.eng.Publish(b.ctx, []engine.IncomingEvent{{Name: name, Data: json.RawMessage(data)}})
	if err != nil {
		t.Fatalf("publish %s: %v", name, err)
	}
	for _, r := range acc[0].Runs {
		if r.FunctionID == fn {
			return r.ID
		}
	}
	t.Fatalf("%s triggered no %s run: %+v", name, fn, acc[0].Runs)
	return ""
}

func (b *bundle) steps(t *testing.T, runID string) map[string]store.Step {
	t.Helper()
	ss, err := b.st.Steps(b.ctx, runID)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]store.Step{}
	for _, s := range ss {
		m[s.ID] = s
	}
	return m
}

// events lists the stored events named name, oldest first.
func (b *bundle) events(t *testing.T, name string) []store.Event {
	t.Helper()
	page, err := b.st.ListEvents(b.ctx, store.EventFilter{Name: name, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := page.Items
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// runs lists fn's runs with one of statuses (any status when none).
func (b *bundle) runs(t *testing.T, fn string, statuses ...store.Status) []store.Run {
	t.Helper()
	page, err := b.st.ListRuns(b.ctx, store.RunFilter{FunctionID: fn, Statuses: statuses, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return page.Items
}

func (b *bundle) get(t *testing.T, key string) string {
	t.Helper()
	v, err := b.st.Get(b.ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return v
}

func TestValidate(t *testing.T) {
	t.Parallel()
	long := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = 'a'
		}
		return string(b)
	}
	contact := func(name, email, message, at string) string {
		d, _ := json.Marshal(map[string]string{"name": name, "email": email, "message": message, "submittedAt": at})
		return string(d)
	}
	const at = "2025-03-12T10:30:00Z"
	tests := []struct {
		name, data string
		field      string // "" when valid
	}{
		{"test/hello.world", `{"email":"a@b.c"}`, ""},
		{"test/hello.world", `{}`, "data.email"},
		{"test/hello.world", `{"email":7}`, "data.email"},
		{"test/hello.world", `{"email":""}`, "data.email"},
		{"test/hello.world", `[1]`, "data"},
		{"some/unknown.event", `{"anything":true}`, ""},

		{"contact/form.submitted", contact("Ada", "ada@example.com", "Hello there, friend", at), ""},
		{"contact/form.submitted", contact(" A ", "ada@example.com", "Hello there, friend", at), "data.name"},
		{"contact/form.submitted", contact(long(1001), "ada@example.com", "Hello there, friend", at), "data.name"},
		{"contact/form.submitted", contact("Ada", "not-an-address", "Hello there, friend", at), "data.email"},
		{"contact/form.submitted", contact("Ada", long(250)+"@x.io", "Hello there, friend", at), "data.email"},
		{"contact/form.submitted", contact("Ada", "ada@example.com", "short", at), "data.message"},
		{"contact/form.submitted", contact("Ada", "ada@example.com", long(1001), at), "data.message"},
		{"contact/form.submitted", contact("Ada", "ada@example.com", "Hello there, friend", "yesterday"), "data.submittedAt"},
		{"contact/form.submitted", `{"name":"Ada","email":"ada@example.com","message":"Hello there, friend","submittedAt":"` + at + `","ip":5}`, "data.ip"},
		{"contact/form.submitted", `{"email":"ada@example.com"}`, "data.name"},

		{"contact/email.sent", `{"email":"a@b.c","type":"notification","messageId":"m1"}`, ""},
		{"contact/email.bounced", `{"email":"a@b.c","type":"notification","messageId":"m1","runId":"r1","at":"2025-03-12T10:31:00.123Z","error":"mailbox full"}`, ""},
		{"contact/email.delivered", `{"email":"a@b.c","type":"confirmation","messageId":"m1","at":"last week"}`, "data.at"},
		{"contact/email.failed", `{"email":"a@b.c","type":"confirmation","error":"boom"}`, ""},
		{"contact/email.failed", `{"email":"a@b.c","type":"other"}`, "data.type"},
		{"contact/email.delivered", `{"type":"notification"}`, "data.email"},

		{"github/data.refresh", `{}`, ""},
		{"github/data.refresh", `{"manual":true,"force":false}`, ""},
		{"github/data.refresh", `{"force":"yes"}`, "data.force"},

		{"blog/post.viewed", `{"slug":"hello-world/part_2"}`, ""},
		{"blog/post.viewed", `{"slug":"a","title":"A","viewedAt":"` + at + `","referrer":"https://x.y","region":"EU","visitor":"h"}`, ""},
		{"blog/post.viewed", `{}`, "data.slug"},
		{"blog/post.viewed", `{"slug":"Hello"}`, "data.slug"},
		{"blog/post.viewed", `{"slug":"` + long(201) + `"}`, "data.slug"},
		{"blog/post.viewed", `{"slug":"a","viewedAt":"now"}`, "data.viewedAt"},
		{"blog/post.viewed", `{"slug":"a","visitor":1}`, "data.visitor"},

		{"blog/milestone.reached", `{"slug":"a","title":"A","milestone":1000,"totalViews":1001,"reachedAt":"` + at + `"}`, ""},
		{"blog/milestone.reached", `{"slug":"a","title":"A","milestone":500,"totalViews":501,"reachedAt":"` + at + `"}`, "data.milestone"},
		{"blog/milestone.reached", `{"slug":"a","title":"A","milestone":100,"reachedAt":"` + at + `"}`, "data.totalViews"},
		{"blog/milestone.reached", `{"slug":"a","milestone":100,"totalViews":100,"reachedAt":"` + at + `"}`, "data.title"},
		{"blog/milestone.reached", `{"slug":"a","title":"A","milestone":100,"totalViews":100}`, "data.reachedAt"},

		{"analytics/summary.generate", `{"period":"daily","startDate":"2025-03-11","endDate":"2025-03-11"}`, ""},
		{"analytics/summary.generate", `{"period":"yearly","startDate":"2025-03-11","endDate":"2025-03-11"}`, "data.period"},
		{"analytics/summary.generate", `{"period":"daily","startDate":"11/03/2025","endDate":"2025-03-11"}`, "data.startDate"},
		{"analytics/summary.generate", `{"period":"daily","startDate":"2025-03-11"}`, "data.endDate"},
		{"analytics/summary.generate", `{"period":"daily","startDate":"2025-03-12","endDate":"2025-03-11"}`, "data.endDate"},
		{"analytics/summary.generate", `{"period":"monthly","startDate":"2024-01-01","endDate":"2024-12-31"}`, ""},
		{"analytics/summary.generate", `{"period":"monthly","startDate":"2024-01-01","endDate":"2025-01-01"}`, "data.endDate"},
	}
	for _, tt := range tests {
		err := jobs.Validate(3, engine.IncomingEvent{Name: tt.name, Data: json.RawMessage(tt.data)})
		var ve *engine.ValidationError
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%s %s: unexpected error %v", tt.name, tt.data, err)
		case tt.field != "" && (!errors.As(err, &ve) || ve.Field != tt.field || ve.Index != 3):
			t.Errorf("%s %s: error %v, want a ValidationError on %s at index 3", tt.name, tt.data, err, tt.field)
		}
	}
}

func TestHelloWorldSleepsThenGreets(t *testing.T) {
	t.Parallel()
	backendtest.OnEach(t, func(t *testing.T, be backendtest.Backend) {
		b := setup(t, be, nil)
		id := b.send(t, "test/hello.world", `{"email":"a@b.c"}`, "hello-world")
		b.waitStatus(t, id, store.StatusSleeping)
		b.clock.Advance(999 * time.Millisecond)
		if r := b.run(t, id); r.Status != store.StatusSleeping {
			t.Fatalf("woke before its second: %s", r.Status)
		}
		b.clock.Advance(time.Millisecond)
		if r := b.waitStatus(t, id, store.StatusCompleted); string(r.Output) != `{"message":"Hello a@b.c!"}` {
			t.Errorf("output %s", r.Output)
		}
	})
}
