package tui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/exp/teatest/v2"

	"github.com/dcyfr/cyberdrew/internal/api"
	"github.com/dcyfr/cyberdrew/internal/client"
	"github.com/dcyfr/cyberdrew/internal/config"
	"github.com/dcyfr/cyberdrew/internal/daemon"
	"github.com/dcyfr/cyberdrew/internal/daemon/daemontest"
	"github.com/dcyfr/cyberdrew/internal/engine"
	"github.com/dcyfr/cyberdrew/internal/store"
	"github.com/dcyfr/cyberdrew/internal/store/sqlite"
)

// greet is a function with one step, for the tests against a real daemon.
var greet = engine.Function{
	ID: "greet", Triggers: []engine.Trigger{{Event: "test/greet"}},
	Handler: func(ctx context.Context, r *engine.Run) (any, error) {
		return engine.Step(ctx, r, "say-hello", func(context.Context) (string, error) { return "hello", nil })
	},
}

// TestDashFollowsARealDaemon runs the dash against a daemon on loopback,
// sends an event and waits for its run to appear and complete on screen.
func TestDashFollowsARealDaemon(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg := config.DefaultServe(func(string) string { return "" })
	cfg.Addr, cfg.DataDir, cfg.Workers, cfg.ShutdownTimeout = "127.0.0.1:0", t.TempDir(), 2, 2*time.Second
	d := daemontest.Run(t, cfg, nil, daemon.Options{Functions: []engine.Function{greet}})
	c, err := client.New(client.Options{URL: "http://" + d.Addr()})
	if err != nil {
		t.Fatal(err)
	}

	m := New(t.Context(), FromClient(c), Options{Profile: colorprofile.ASCII})
	t.Cleanup(m.stop)
	rec := &frames{Model: m}
	tm := teatest.NewTestModel(t, rec, teatest.WithInitialTermSize(120, 40))
	// Bubble Tea v2 draws a frame as changes to the one before (cursor
	// moves between changed cells), so the text on screen is read from the
	// frames the dash drew, not from the bytes written.
	wait := func(what string, re *regexp.Regexp) {
		t.Helper()
		teatest.WaitFor(t, rec, func(b []byte) bool { return re.Match(b) },
			teatest.WithDuration(15*time.Second), teatest.WithCheckInterval(10*time.Millisecond))
	}
	// The header shows the daemon's stats and the functions pane its function.
	wait("stats", regexp.MustCompile(`sqlite ok · workers 0/2`))

	ids, err := c.Send(ctx, client.Event{Name: "test/greet", Data: json.RawMessage(`{"name":"dash"}`)})
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	runs, err := c.EventRuns(ctx, ids[0])
	if err != nil || len(runs) != 1 {
		t.Fatalf("event runs: %v, %d runs", err, len(runs))
	}
	id := regexp.QuoteMeta(shortID(runs[0].RunID))
	wait("the run completed", regexp.MustCompile(id+` greet +test/greet +Completed +say-hello`))

	tm.Send(keyMsg("q"))
	tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
	final := tm.FinalModel(t).(*frames).Model
	if r := final.runs.runs[0]; r.RunID != runs[0].RunID || r.Status != "Completed" {
		t.Errorf("final run %+v", r)
	}
}

// frames is the dash recording each frame it draws; reading it gives the
// frames drawn since the last read, each whole, then io.EOF.
type frames struct {
	*Model
	mu     sync.Mutex
	last   string
	unread bytes.Buffer
}

func (f *frames) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	_, cmd := f.Model.Update(msg)
	return f, cmd
}

func (f *frames) View() tea.View {
	v := f.Model.View()
	f.mu.Lock()
	defer f.mu.Unlock()
	if v.Content != f.last {
		f.last = v.Content
		f.unread.WriteString(v.Content + "\n")
	}
	return v
}

func (f *frames) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unread.Len() == 0 {
		return 0, io.EOF
	}
	return f.unread.Read(p)
}

// countingReader counts the store calls of the HTTP surface.
type countingReader struct {
	api.Reader
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingReader) count(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[op]++
}

func (c *countingReader) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := maps.Clone(c.calls)
	clear(c.calls)
	return out
}

func (c *countingReader) GetEvent(ctx context.Context, id string) (store.Event, error) {
	c.count("GetEvent")
	return c.Reader.GetEvent(ctx, id)
}

func (c *countingReader) ListEvents(ctx context.Context, f store.EventFilter) (store.Page[store.Event], error) {
	c.count("ListEvents")
	return c.Reader.ListEvents(ctx, f)
}

func (c *countingReader) GetRun(ctx context.Context, id string) (store.Run, error) {
	c.count("GetRun")
	return c.Reader.GetRun(ctx, id)
}

func (c *countingReader) ListRuns(ctx context.Context, f store.RunFilter) (store.Page[store.Run], error) {
	c.count("ListRuns")
	return c.Reader.ListRuns(ctx, f)
}

func (c *countingReader) Steps(ctx context.Context, runID string) ([]store.Step, error) {
	c.count("Steps")
	return c.Reader.Steps(ctx, runID)
}

func (c *countingReader) Subscribe(ctx context.Context) <-chan store.Change {
	c.count("Subscribe")
	return c.Reader.Subscribe(ctx)
}

func (c *countingReader) QueueDepth(ctx context.Context) (int, error) {
	c.count("QueueDepth")
	return c.Reader.QueueDepth(ctx)
}

func (c *countingReader) Ping(ctx context.Context) error {
	c.count("Ping")
	return c.Reader.Ping(ctx)
}

func (c *countingReader) Kind() string {
	c.count("Kind")
	return c.Reader.Kind()
}

// TestRefreshCostIsConstant counts the store calls of one dash refresh,
// with and without the runs listing, over 10 and over 300 runs: the same.
func TestRefreshCostIsConstant(t *testing.T) {
	t.Parallel()
	want := map[bool]map[string]int{
		false: {"Kind": 1, "Ping": 1, "QueueDepth": 1},
		true:  {"Kind": 1, "Ping": 1, "QueueDepth": 1, "ListRuns": 1, "ListEvents": 1},
	}
	for _, n := range []int{10, 300} {
		for _, withRuns := range []bool{false, true} {
			got := refreshCalls(t, n, withRuns)
			if !maps.Equal(got, want[withRuns]) {
				t.Errorf("%d runs, runs listing %v: store calls %v, want %v", n, withRuns, got, want[withRuns])
			}
		}
	}
}

// refreshCalls stores n runs, then counts the store calls of one refresh.
func refreshCalls(t *testing.T, n int, withRuns bool) map[string]int {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "cyberdrew.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng, err := engine.New(engine.Options{Store: st})
	if err == nil {
		err = eng.Register(greet)
	}
	if err != nil {
		t.Fatal(err)
	}
	evs := make([]engine.IncomingEvent, n)
	for i := range evs {
		evs[i] = engine.IncomingEvent{Name: "test/greet", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}
	}
	if _, err := eng.Publish(ctx, evs); err != nil {
		t.Fatal(err)
	}
	reader := &countingReader{Reader: st, calls: map[string]int{}}
	srv := httptest.NewServer(api.New(api.Config{}, eng, reader, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	c, err := client.New(client.Options{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	m := New(ctx, FromClient(c), Options{Profile: colorprofile.ASCII})
	t.Cleanup(m.stop)
	// Connected, as between the stream's changes.
	m.feed, m.downSince, m.runsStale = newFakeFeed(), time.Time{}, withRuns
	reader.snapshot()
	msgs := runAll(t, m.refresh())
	got := reader.snapshot()
	if withRuns {
		var listed int
		for _, msg := range msgs {
			if r, ok := msg.(runsMsg); ok {
				listed = len(r.runs)
			}
		}
		if listed != n {
			t.Errorf("the refresh listed %d runs, want %d", listed, n)
		}
	}
	return got
}

// runAll runs the commands of a refresh and returns their messages.
func runAll(t *testing.T, cmd tea.Cmd) []tea.Msg {
	t.Helper()
	msg := cmd()
	batch, ok := msg.(tea.BatchMsg)
	if !ok {
		return []tea.Msg{msg}
	}
	var out []tea.Msg
	for _, c := range batch {
		out = append(out, c())
	}
	return out
}
