package tui

import (
	"errors"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"

	"github.com/dcyfr/cyberdrew/internal/client"
)

func TestStreamChangesPatchTheRuns(t *testing.T) {
	t.Parallel()
	src := newFixture()
	m := newTestModel(t, src, 80, 24)
	feed := src.feed
	if m.feed != feed {
		t.Fatal("not connected after connectedMsg")
	}
	// A new event and its run, a step, and a status change of a listed run.
	_, cmd := m.Update(changesMsg{feed: feed, changes: []client.Change{
		{Kind: "event", EventID: "01JN0000000000000000000EV9", EventName: "blog/post.viewed", At: t0},
		{Kind: "run", RunID: "01JN000000000000000000RUN9", FunctionID: "track-post-view", EventID: "01JN0000000000000000000EV9", Status: "Queued", At: t0},
		{Kind: "run", RunID: "01JN000000000000000000RUN9", Status: "Running", At: t0.Add(time.Second)},
		{Kind: "step", RunID: "01JN000000000000000000RUN9", StepID: "count-view", At: t0.Add(time.Second)},
		{Kind: "run", RunID: "01JN000000000000000000RUN4", Status: "Completed", At: t0.Add(2 * time.Second)},
	}})
	if cmd == nil {
		t.Fatal("the stream's read was not re-armed")
	}
	runs := m.runs.visible()
	if got := ids(runs); !slices.Equal(got, []string{"0000RUN9", "0000RUN5", "0000RUN4", "0000RUN3", "0000RUN2", "0000RUN1"}) {
		t.Fatalf("runs %v", got)
	}
	if r := runs[0]; r.Status != "Running" || r.RunStartedAt == nil || m.runs.steps[r.RunID] != "count-view" || m.runs.trigger(r) != "blog/post.viewed" {
		t.Errorf("new run %+v, step %q, trigger %q", r, m.runs.steps[r.RunID], m.runs.trigger(r))
	}
	if r := runs[2]; r.Status != "Completed" || r.EndedAt == nil || !r.EndedAt.Equal(t0.Add(2*time.Second)) {
		t.Errorf("finished run %+v", r)
	}
	if !m.runsStale {
		t.Error("a run the listing lacked should make the runs stale")
	}
	if ev, _ := m.events.selected(); ev.InternalID != "01JN0000000000000000000EV9" {
		t.Errorf("newest event %+v", ev)
	}
	view := m.View().Content
	if !strings.Contains(view, "0000RUN9 track-post-v") || !strings.Contains(view, "count-view") {
		t.Errorf("view lacks the new run:\n%s", view)
	}
	// On the first row, the cursor follows the newest run; elsewhere it
	// stays on its run when rows come in.
	m.Update(changesMsg{feed: feed, changes: []client.Change{{Kind: "run", RunID: "01JN000000000000000000RUNA", FunctionID: "hello-world", Status: "Queued", At: t0}}})
	if r, _ := m.runs.selected(); r.RunID != "01JN000000000000000000RUNA" {
		t.Errorf("first-row cursor left on %s", r.RunID)
	}
	press(t, m, "j")
	m.Update(changesMsg{feed: feed, changes: []client.Change{{Kind: "run", RunID: "01JN000000000000000000RUNB", FunctionID: "hello-world", Status: "Queued", At: t0}}})
	if r, _ := m.runs.selected(); r.RunID != "01JN000000000000000000RUN9" {
		t.Errorf("selection moved to %s", r.RunID)
	}

	// A changes batch from a feed that was replaced is dropped.
	if _, cmd := m.Update(changesMsg{feed: newFakeFeed(), changes: []client.Change{{Kind: "run", RunID: "X", Status: "Queued"}}}); cmd != nil || m.runs.index("X") >= 0 {
		t.Error("a stale feed's changes were applied")
	}
	// A resync makes the runs stale, and the next tick reads them.
	m.runsStale = false
	m.Update(changesMsg{feed: feed, changes: []client.Change{{Kind: "resync"}}})
	if !m.runsStale {
		t.Error("resync did not make the runs stale")
	}
}

func TestWaitChangesBatches(t *testing.T) {
	t.Parallel()
	f := newFakeFeed()
	for i := range 3 {
		f.ch <- client.Change{Kind: "run", RunID: string(rune('a' + i))}
	}
	msg := waitChanges(f)().(changesMsg)
	if len(msg.changes) != 3 || msg.feed != f {
		t.Errorf("batch of %d, want 3", len(msg.changes))
	}
	f.err = errors.New("client: stream closed by the daemon")
	close(f.ch)
	if end, ok := waitChanges(f)().(streamEndedMsg); !ok || end.err != f.err {
		t.Errorf("closed feed gave %#v", end)
	}
}

func TestDisconnectBannerPollAndReconnect(t *testing.T) {
	t.Parallel()
	src := newFixture()
	now := t0
	m := New(t.Context(), src, Options{Profile: colorprofile.ASCII, Now: func() time.Time { return now }})
	t.Cleanup(m.stop)
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	// Before the first connection, the dash is down and polls.
	if !strings.Contains(m.View().Content, "disconnected since 12:00:00") {
		t.Error("no banner before the first connection")
	}
	m.Update(connectedMsg{feed: src.feed})
	if strings.Contains(m.View().Content, "disconnected") {
		t.Error("banner while connected")
	}

	now = t0.Add(5 * time.Second)
	_, cmd := m.Update(streamEndedMsg{err: errors.New("client: stream closed by the daemon")})
	if !src.feed.closed || m.feed != nil {
		t.Error("the broken feed was not closed")
	}
	if cmd == nil {
		t.Fatal("no reconnect scheduled")
	}
	now = t0.Add(17 * time.Second)
	view := m.View().Content
	if !strings.Contains(view, "client: stream closed by the daemon · disconnected since 12:00:05 (12s)") || !strings.Contains(view, "reconnecting") {
		t.Errorf("banner:\n%s", view)
	}
	// A second failure keeps the first time.
	m.Update(streamEndedMsg{err: errors.New("connection refused")})
	if !strings.Contains(m.View().Content, "disconnected since 12:00:05") {
		t.Error("a failed reconnect moved the banner's time")
	}
	// An unreachable daemon is said in the dial's innermost words, so that
	// since when shows at 120 columns (the whole dial error pushed it off).
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 30})
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	m.Update(streamEndedMsg{err: &client.UnreachableError{URL: "http://127.0.0.1:56369", Err: dial}})
	if view := m.View().Content; !strings.Contains(view,
		"cannot reach the daemon at http://127.0.0.1:56369: connection refused · disconnected since 12:00:05 (12s) · reconnect") {
		t.Errorf("banner of an unreachable daemon at 120 columns:\n%s", view)
	}

	// While down, each tick polls the runs (and the open run).
	src.calls = nil
	m.fetchingStats, m.fetchingFns, m.fetchingRuns = false, false, false
	run(t, m, m.refresh())
	if got := src.called(); !slices.Contains(got, "runs limit=300") || !slices.Contains(got, "events limit=200") {
		t.Errorf("tick while down read %v", got)
	}
	// reconnectMsg opens the stream again, and the runs are read.
	m.fetchingRuns = false
	_, cmd = m.Update(reconnectMsg{})
	msg := cmd()
	if _, ok := msg.(connectedMsg); !ok {
		t.Fatalf("reconnect gave %#v", msg)
	}
	m.Update(msg)
	if strings.Contains(m.View().Content, "disconnected") || !m.fetchingRuns {
		t.Error("reconnection did not clear the banner or did not re-read the runs")
	}

	// Subscribe failing reports a streamEndedMsg.
	src.err = errors.New("refused")
	if _, ok := connect(t.Context(), src)().(streamEndedMsg); !ok {
		t.Error("a failed subscribe is no streamEndedMsg")
	}
}

func TestTickReadsOnlyWhatIsDue(t *testing.T) {
	t.Parallel()
	src := newFixture()
	m := newTestModel(t, src, 80, 24)
	src.calls = nil
	// Connected and nothing stale: stats and functions only.
	_, cmd := m.Update(tickMsg(t0))
	if cmd == nil {
		t.Fatal("tick did not re-arm")
	}
	run(t, m, m.refreshForTest())
	want := []string{"functions", "stats"}
	if got := sorted(src.called()); !slices.Equal(got, want) {
		t.Errorf("connected tick read %v, want %v", got, want)
	}
	// A read in flight is not asked again.
	src.calls = nil
	m.fetchingStats = true
	run(t, m, m.refresh())
	if got := src.called(); slices.Contains(got, "stats") {
		t.Errorf("stats read twice: %v", got)
	}
	m.fetchingStats, m.fetchingFns = false, false
	// Stale runs are read once.
	src.calls = nil
	m.runsStale = true
	run(t, m, m.refresh())
	if got := sorted(src.called()); !slices.Equal(got, []string{"events limit=200", "functions", "runs limit=300", "stats"}) {
		t.Errorf("stale tick read %v", got)
	}
	if m.runsStale || m.fetchingRuns {
		t.Error("the runs are still stale after their read")
	}
	// An open run that changed is read again on the next change batch.
	press(t, m, "G")
	run(t, m, press(t, m, "enter"))
	src.calls = nil
	_, cmd = m.Update(changesMsg{feed: src.feed, changes: []client.Change{{Kind: "step", RunID: "01JN000000000000000000RUN1", StepID: "greet"}}})
	src.feed.ch <- client.Change{Kind: "event", EventID: "01JN0000000000000000000EVX", EventName: "x"} // so that the re-armed read answers
	run(t, m, cmd)
	if got := src.called(); !slices.Contains(got, "run 01JN000000000000000000RUN1") {
		t.Errorf("changed open run not read again: %v", got)
	}
}

// refreshForTest runs refresh as a tick does, from a clean state.
func (m *Model) refreshForTest() tea.Cmd {
	m.fetchingStats, m.fetchingFns = false, false
	return m.refresh()
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func TestReadFailuresAndResize(t *testing.T) {
	t.Parallel()
	src := newFixture()
	m := newTestModel(t, src, 80, 24)
	m.Update(statsMsg{err: errors.New("401 refused")})
	m.Update(functionsMsg{err: errors.New("boom")})
	m.Update(runsMsg{err: errors.New("store unavailable")})
	view := m.View().Content
	// Earlier data stays, the failure in place of the store's health; the
	// runs pane shows the error.
	if !strings.Contains(view, "stats: 401 refused · workers 1/4") || !strings.Contains(view, "store unavailable") || !strings.Contains(view, "0000RUN5") {
		t.Errorf("after failed reads:\n%s", view)
	}
	// With no data yet, the header says so.
	m2 := New(t.Context(), src, Options{Profile: colorprofile.ASCII})
	m2.Update(statsMsg{err: errors.New("401 refused")})
	m2.Update(functionsMsg{err: errors.New("boom")})
	press(t, m2, "h")
	if v := m2.View().Content; !strings.Contains(v, "stats: 401 refused") || !strings.Contains(v, "functions: boom") {
		t.Errorf("first reads failed:\n%s", v)
	}

	// Resizing redraws at the new size, the open run too.
	press(t, m, "G")
	run(t, m, press(t, m, "enter"))
	for _, size := range [][2]int{{120, 40}, {80, 24}, {60, 15}, {200, 60}} {
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		checkFits(t, m.View().Content, size[0], size[1])
		if m.detail.vp.Width() != size[0] {
			t.Errorf("detail width %d at %v", m.detail.vp.Width(), size)
		}
	}
	press(t, m, "esc")
	for _, size := range [][2]int{{100, 30}, {80, 24}} {
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		checkFits(t, m.View().Content, size[0], size[1])
	}
}

func TestListingKeepsNewerStreamedRuns(t *testing.T) {
	t.Parallel()
	src := newFixture()
	m := newTestModel(t, src, 80, 24)
	m.Update(changesMsg{feed: src.feed, changes: []client.Change{{Kind: "run", RunID: "01JN000000000000000000RUNZ", FunctionID: "hello-world", Status: "Queued", At: t0}}})
	// A listing read before that run was created does not drop it.
	m.Update(runsMsg{runs: src.runs, events: src.events})
	if m.runs.index("01JN000000000000000000RUNZ") != 0 || len(m.runs.runs) != 6 {
		t.Errorf("runs after the listing: %v", ids(m.runs.runs))
	}
}

func TestSparklineAndRate(t *testing.T) {
	t.Parallel()
	if got := sparkline([]int{0, 1, 2, 4, 8, 0}, 6); got != "·▂▂▃▅█" && got != "·▂▃▄▆█" {
		// Exact shape matters less than its rules, checked below.
		t.Logf("sparkline %q", got)
	}
	s := sparkline([]int{0, 0, 5, 10}, 4)
	r := []rune(s)
	if len(r) != 4 || r[0] != '·' || r[3] != '█' || r[2] >= r[3] {
		t.Errorf("sparkline %q", s)
	}
	if got := sparkline(make([]int, 300), 10); got != strings.Repeat("·", 10) {
		t.Errorf("empty sparkline %q", got)
	}
	if sparkline(nil, 0) != "" {
		t.Error("zero-width sparkline is not empty")
	}
	series := make([]int, 300)
	series[299], series[290] = 10, 5
	if got := rate(series); got != 1.5 {
		t.Errorf("rate %v, want 1.5", got)
	}
	if rate(nil) != 0 {
		t.Error("rate of nothing")
	}
}

func TestDetailMessages(t *testing.T) {
	t.Parallel()
	src := newFixture()
	m := newTestModel(t, src, 80, 24)
	press(t, m, "G")
	press(t, m, "enter")
	if !strings.Contains(m.View().Content, "loading run 01JN000000000000000000RUN1") {
		t.Errorf("before its read, the detail says nothing of loading:\n%s", m.View().Content)
	}
	// An answer for another run (opened earlier) is ignored.
	m.Update(detailMsg{runID: "01JN000000000000000000RUN4", run: client.RunDetail{Run: client.Run{RunID: "01JN000000000000000000RUN4", FunctionID: "other"}}})
	if m.detail.run != nil {
		t.Error("another run's detail was shown")
	}
	// A change to the open run while its read is in flight reads it again
	// once the answer arrives.
	m.fetchingDetail = true
	m.Update(changesMsg{feed: src.feed, changes: []client.Change{{Kind: "run", RunID: "01JN000000000000000000RUN1", Status: "Completed"}}})
	if !m.detailStale {
		t.Fatal("the open run's change was not noted")
	}
	_, cmd := m.Update(fetchDetail(t.Context(), src, "01JN000000000000000000RUN1")())
	if cmd == nil || m.detail.run == nil {
		t.Fatal("no second read after a change during the first")
	}
	src.calls = nil
	run(t, m, cmd)
	if got := src.called(); !slices.Contains(got, "run 01JN000000000000000000RUN1") {
		t.Errorf("second read: %v", got)
	}
	// A failed read keeps what was shown.
	m.Update(detailMsg{runID: "01JN000000000000000000RUN1", err: errors.New("503 store unavailable")})
	if m.detail.run == nil || !strings.Contains(m.View().Content, "Run 01JN000000000000000000RUN1 · hello-world") {
		t.Errorf("failed read:\n%s", m.View().Content)
	}
}

// TestRefusedKeys: a daemon that refuses the dash's keys (401) is up and
// its store fine. The header blamed the store ("sqlite unreachable") and
// the banner showed the bare 401; each must name what to set, as the
// command line does, where an 80-column screen shows it.
func TestRefusedKeys(t *testing.T) {
	t.Parallel()
	refused := func(area client.Area, method, path, msg string) error {
		return &client.APIError{Status: http.StatusUnauthorized, Message: msg, Method: method, Path: path, Area: area}
	}
	signing := refused(client.AreaAdmin, "GET", "/v1/stream", "missing or invalid bearer signing key")

	m := newTestModel(t, newFixture(), 80, 24)
	m.Update(statsMsg{err: refused(client.AreaAdmin, "GET", "/v1/stats", "missing or invalid bearer signing key")})
	m.Update(streamEndedMsg{err: signing})
	lines := strings.Split(m.View().Content, "\n")
	if strings.Contains(lines[0], "unreachable") || !strings.Contains(lines[0], "INNGEST_SIGNING_KEY") {
		t.Errorf("header %q: want the signing key named, the store not blamed", lines[0])
	}
	if !strings.Contains(lines[2], "INNGEST_SIGNING_KEY (or --token)") || !strings.Contains(lines[2], "disconnected since") {
		t.Errorf("banner %q: want INNGEST_SIGNING_KEY (or --token) and since when", lines[2])
	}

	// The send action refused by the event API names the event key.
	src := newFixture()
	m = newTestModel(t, src, 80, 24)
	run(t, m, press(t, m, "E"))
	run(t, m, press(t, m, "enter"))
	src.err = refused(client.AreaEvents, "POST", "/e/xxx", "event key not found")
	run(t, m, press(t, m, "y"))
	if view := m.View().Content; !m.flashErr || !strings.Contains(view, "INNGEST_EVENT_KEY (or --event-key)") {
		t.Errorf("flash %q, view:\n%s", m.flash, view)
	}
}
