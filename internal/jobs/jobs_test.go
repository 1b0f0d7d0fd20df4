package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/sqlite"
)

func TestValidate(t *testing.T) {
	t.Parallel()
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
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clock := clockwork.NewFakeClock()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db"), sqlite.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	eng, _ := engine.New(engine.Options{Store: st, Clock: clock})
	if err := eng.Register(jobs.Functions()...); err != nil {
		t.Fatal(err)
	}
	pool := engine.NewWorkerPool(eng, engine.PoolOptions{LeaseTTL: time.Hour})
	pool.Start(ctx)
	defer pool.Stop(ctx)
	changes := st.Subscribe(ctx)
	acc, err := eng.Publish(ctx, []engine.IncomingEvent{{Name: "test/hello.world", Data: json.RawMessage(`{"email":"a@b.c"}`)}})
	if err != nil || len(acc[0].Runs) != 1 {
		t.Fatalf("publish: %v %+v", err, acc)
	}
	id := acc[0].Runs[0].ID
	await := func(want store.Status) store.Run {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			r, err := st.GetRun(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status == want {
				return r
			}
			select {
			case <-changes:
			case <-timeout:
				t.Fatalf("run is %s, want %s", r.Status, want)
			}
		}
	}
	await(store.StatusSleeping)
	clock.Advance(999 * time.Millisecond)
	if r, _ := st.GetRun(ctx, id); r.Status != store.StatusSleeping {
		t.Fatalf("woke before its second: %s", r.Status)
	}
	clock.Advance(time.Millisecond)
	if r := await(store.StatusCompleted); string(r.Output) != `{"message":"Hello a@b.c!"}` {
		t.Errorf("output %s", r.Output)
	}
}
