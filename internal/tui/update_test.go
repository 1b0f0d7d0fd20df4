package tui

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/colorprofile"
	"github.com/charmbracelet/x/ansi"

	"github.com/dcyfr/cyberdrew/internal/client"
)

// run executes cmd (each command of a batch) and applies the messages to m.
// Only commands that answer at once (reads of the fake, actions) may reach
// it: keys start no timer.
func run(t *testing.T, m *Model, cmd tea.Cmd) []tea.Msg {
	t.Helper()
	if cmd == nil {
		return nil
	}
	done := make(chan tea.Msg, 1)
	go func() { done <- cmd() }()
	var msg tea.Msg
	select {
	case msg = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a command did not answer")
	}
	if batch, ok := msg.(tea.BatchMsg); ok {
		var out []tea.Msg
		for _, c := range batch {
			out = append(out, run(t, m, c)...)
		}
		return out
	}
	m.Update(msg)
	return []tea.Msg{msg}
}

func TestNavigationKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		keys []string
		want int // cursor in the runs pane
	}{
		{[]string{"down"}, 1},
		{[]string{"j", "j"}, 2},
		{[]string{"j", "up"}, 0},
		{[]string{"j", "k"}, 0},
		{[]string{"k"}, 0},
		{[]string{"G"}, 4},
		{[]string{"end"}, 4},
		{[]string{"G", "g"}, 0},
		{[]string{"G", "home"}, 0},
		{[]string{"pgdown"}, 4},
		{[]string{"ctrl+d"}, 4},
		{[]string{" "}, 4},
		{[]string{"G", "pgup"}, 0},
		{[]string{"G", "ctrl+u"}, 0},
	}
	for _, tt := range tests {
		m := newTestModel(t, newFixture(), 80, 24)
		for _, k := range tt.keys {
			press(t, m, k)
		}
		if m.runs.cursor != tt.want {
			t.Errorf("keys %q: cursor %d, want %d", tt.keys, m.runs.cursor, tt.want)
		}
	}
}

func TestPaneKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		keys []string
		want pane
	}{
		{nil, paneRuns},
		{[]string{"tab"}, paneEvents},
		{[]string{"tab", "tab"}, paneFunctions},
		{[]string{"right"}, paneEvents},
		{[]string{"l"}, paneEvents},
		{[]string{"shift+tab"}, paneFunctions},
		{[]string{"left"}, paneFunctions},
		{[]string{"h"}, paneFunctions},
		{[]string{"h", "h", "h"}, paneRuns},
		// enter on a function shows its runs.
		{[]string{"h", "j", "j", "enter"}, paneRuns},
		// enter on an event shows its runs.
		{[]string{"tab", "enter"}, paneRuns},
	}
	for _, tt := range tests {
		m := newTestModel(t, newFixture(), 80, 24)
		for _, k := range tt.keys {
			press(t, m, k)
		}
		if m.pane != tt.want {
			t.Errorf("keys %q: pane %d, want %d", tt.keys, m.pane, tt.want)
		}
	}

	m := newTestModel(t, newFixture(), 80, 24)
	for _, k := range []string{"h", "j", "j", "enter"} {
		press(t, m, k)
	}
	if got := ids(m.runs.visible()); !slices.Equal(got, []string{"0000RUN3"}) || m.runs.input.Value() != "calculate-trending" {
		t.Errorf("function's runs: %v with filter %q", got, m.runs.input.Value())
	}
	m = newTestModel(t, newFixture(), 80, 24)
	for _, k := range []string{"tab", "j", "j", "enter"} {
		press(t, m, k)
	}
	if got := ids(m.runs.visible()); !slices.Equal(got, []string{"0000RUN3", "0000RUN2"}) {
		t.Errorf("event's runs: %v", got)
	}
	// The functions and events panes move their own cursors.
	press(t, m, "h")
	press(t, m, "G")
	if m.functions.cursor != 2 {
		t.Errorf("functions cursor after G = %d, want 2", m.functions.cursor)
	}
}

func ids(runs []client.Run) []string {
	out := make([]string, len(runs))
	for i, r := range runs {
		out[i] = shortID(r.RunID)
	}
	return out
}

func TestFilterStatusAndSortKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		keys []string
		want []string
	}{
		{nil, []string{"0000RUN5", "0000RUN4", "0000RUN3", "0000RUN2", "0000RUN1"}},
		{[]string{"o"}, []string{"0000RUN1", "0000RUN2", "0000RUN3", "0000RUN4", "0000RUN5"}},
		{[]string{"o", "o"}, []string{"0000RUN5", "0000RUN4", "0000RUN3", "0000RUN2", "0000RUN1"}},
		{[]string{"1"}, []string{"0000RUN5"}},
		{[]string{"2"}, []string{"0000RUN4"}},
		{[]string{"3"}, []string{"0000RUN2"}},
		{[]string{"4"}, []string{"0000RUN1"}},
		{[]string{"5"}, []string{"0000RUN3"}},
		{[]string{"6"}, nil},
		{[]string{"7"}, nil},
		{[]string{"5", "0"}, []string{"0000RUN5", "0000RUN4", "0000RUN3", "0000RUN2", "0000RUN1"}},
		// By function, by trigger name, by run id, in any case.
		{[]string{"/", "T", "R", "E", "N", "D", "enter"}, []string{"0000RUN3"}},
		{[]string{"/", "s", "c", "h", "e", "d", "enter"}, []string{"0000RUN3", "0000RUN2"}},
		{[]string{"/", "r", "u", "n", "4", "enter"}, []string{"0000RUN4"}},
		{[]string{"/", "r", "u", "n", "4", "backspace", "enter"}, []string{"0000RUN5", "0000RUN4", "0000RUN3", "0000RUN2", "0000RUN1"}},
		// esc while typing drops the filter; esc after it clears filter and status.
		{[]string{"/", "t", "r", "esc"}, []string{"0000RUN5", "0000RUN4", "0000RUN3", "0000RUN2", "0000RUN1"}},
		{[]string{"/", "h", "e", "l", "enter", "1", "esc"}, []string{"0000RUN5", "0000RUN4", "0000RUN3", "0000RUN2", "0000RUN1"}},
		{[]string{"/", "h", "e", "l", "enter", "2"}, []string{"0000RUN4"}},
	}
	for _, tt := range tests {
		m := newTestModel(t, newFixture(), 80, 24)
		for _, k := range tt.keys {
			press(t, m, k)
		}
		if got := ids(m.runs.visible()); !slices.Equal(got, tt.want) && (len(got) != 0 || len(tt.want) != 0) {
			t.Errorf("keys %q: runs %v, want %v", tt.keys, got, tt.want)
		}
	}

	// While typing a filter, q and the pane keys are text, not commands.
	m := newTestModel(t, newFixture(), 80, 24)
	press(t, m, "/")
	for _, k := range []string{"q", "tab", "R"} {
		if cmd := press(t, m, k); isQuit(cmd) || m.pane != paneRuns || m.dialog != nil {
			t.Fatalf("%q while filtering acted as a command", k)
		}
	}
	if m.runs.input.Value() != "qR" {
		t.Errorf("filter text = %q, want qR", m.runs.input.Value())
	}
}

func isQuit(cmd tea.Cmd) bool {
	if cmd == nil {
		return false
	}
	_, ok := cmd().(tea.QuitMsg)
	return ok
}

func TestQuitAndHelpKeys(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"q", "ctrl+c"} {
		m := newTestModel(t, newFixture(), 80, 24)
		if !isQuit(press(t, m, k)) {
			t.Errorf("%s does not quit", k)
		}
	}
	// ctrl+c quits from a dialog and from the filter too.
	m := newTestModel(t, newFixture(), 80, 24)
	press(t, m, "R")
	if !isQuit(press(t, m, "ctrl+c")) {
		t.Error("ctrl+c does not quit from a dialog")
	}
	m = newTestModel(t, newFixture(), 80, 24)
	press(t, m, "/")
	if !isQuit(press(t, m, "ctrl+c")) {
		t.Error("ctrl+c does not quit from the filter")
	}

	m = newTestModel(t, newFixture(), 80, 24)
	press(t, m, "?")
	if !m.showHelp || !strings.Contains(m.View().Content, "send a test event") {
		t.Fatal("? does not show the keys")
	}
	press(t, m, "j")
	if m.showHelp || m.runs.cursor != 0 {
		t.Errorf("a key after ? should close the help and do nothing else: help %v cursor %d", m.showHelp, m.runs.cursor)
	}
	press(t, m, "?")
	if !isQuit(press(t, m, "q")) {
		t.Error("q does not quit from the help")
	}
}

func TestDetailKeys(t *testing.T) {
	t.Parallel()
	src := newFixture()
	m := newTestModel(t, src, 80, 24)
	press(t, m, "G")
	run(t, m, press(t, m, "enter"))
	if m.detail == nil || m.detail.run == nil || m.detail.event == nil {
		t.Fatalf("enter did not open the run: %+v", m.detail)
	}
	if got := src.called(); !slices.Contains(got, "run 01JN000000000000000000RUN1") || !slices.Contains(got, "event 01JN0000000000000000000EV0") {
		t.Errorf("detail reads: %v", got)
	}
	view := m.View().Content
	for _, want := range []string{"fetch", "2 attempts", "memoized", "attempt 1: timeout", `"email": "a@b.c"`, `"message": "Hello a@b.c!"`} {
		if !strings.Contains(view, want) {
			t.Errorf("detail view lacks %q", want)
		}
	}
	// Scrolling.
	for _, k := range []string{"j", "down", "pgdown", "G"} {
		before := m.detail.vp.YOffset()
		press(t, m, k)
		if m.detail.vp.YOffset() <= before && !m.detail.vp.AtBottom() {
			t.Errorf("%s did not scroll down (offset %d)", k, m.detail.vp.YOffset())
		}
	}
	for _, k := range []string{"k", "up", "pgup", "g"} {
		press(t, m, "G")
		before := m.detail.vp.YOffset()
		press(t, m, k)
		if m.detail.vp.YOffset() >= before && before > 0 {
			t.Errorf("%s did not scroll up (offset %d)", k, m.detail.vp.YOffset())
		}
	}
	// tab does not leave the detail; esc and backspace do.
	press(t, m, "tab")
	if m.detail == nil {
		t.Fatal("tab closed the detail")
	}
	press(t, m, "esc")
	if m.detail != nil {
		t.Fatal("esc did not close the detail")
	}
	press(t, m, "enter")
	press(t, m, "backspace")
	if m.detail != nil {
		t.Fatal("backspace did not close the detail")
	}

	// A run that cannot be read says why.
	m = newTestModel(t, src, 80, 24)
	run(t, m, press(t, m, "enter"))
	if !strings.Contains(m.View().Content, "not found") {
		t.Errorf("unreadable run: %s", m.View().Content)
	}
}

func TestActionKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		keys  []string
		call  string // "" when nothing may be asked of the daemon
		flash string
	}{
		{"rerun confirmed with y", []string{"R", "y"}, "rerun 01JN000000000000000000RUN5", "rerun of 0000RUN5 started as 0RERUN01"},
		{"rerun confirmed with enter", []string{"R", "enter"}, "rerun 01JN000000000000000000RUN5", "rerun of"},
		{"rerun refused with n", []string{"R", "n"}, "", ""},
		{"rerun refused with esc", []string{"R", "esc"}, "", ""},
		{"rerun refused with N", []string{"R", "N"}, "", ""},
		{"rerun refused with q", []string{"R", "q"}, "", ""},
		{"other keys leave the dialog open", []string{"R", "j", "x", "n"}, "", ""},
		{"cancel", []string{"j", "C", "Y"}, "cancel 01JN000000000000000000RUN4", "cancelled 0000RUN4"},
		{"cancel of a finished run is refused", []string{"G", "C", "y"}, "", "has already finished (Completed)"},
		{"rerun from the detail", []string{"G", "enter", "R", "y"}, "rerun 01JN000000000000000000RUN1", "rerun of 0000RUN1"},
		{"cancel from the detail", []string{"j", "enter", "C", "y"}, "cancel 01JN000000000000000000RUN4", "cancelled"},
		{"invoke", []string{"h", "I", "y"}, "invoke hello-world ", "invoked hello-world: run 00INVOKE"},
		{"invoke of a disabled function is refused", []string{"h", "j", "I", "y"}, "", "disabled: GITHUB_TOKEN is not set"},
		{"send a test event", []string{"E", "enter", "y"}, `send test/hello.world {"email":"drew@example.com"}`, "sent test/hello.world as event 0000SENT"},
		{"send the second test event", []string{"E", "j", "enter", "y"}, `send blog/post.viewed {"slug":"hello-world"}`, "sent blog/post.viewed"},
		{"send picker moves both ways", []string{"E", "j", "j", "k", "enter", "y"}, "send test/hello.world", "sent"},
		{"send dropped at the picker", []string{"E", "esc"}, "", ""},
		{"send dropped at the question", []string{"E", "enter", "n"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := newFixture()
			m := newTestModel(t, src, 80, 24)
			before := len(src.called())
			for _, k := range tt.keys {
				run(t, m, press(t, m, k))
			}
			var acted []string
			for _, c := range src.called()[before:] {
				if !strings.HasPrefix(c, "run ") && !strings.HasPrefix(c, "event ") {
					acted = append(acted, c)
				}
			}
			switch {
			case tt.call == "" && len(acted) > 0:
				t.Errorf("asked the daemon %v, want nothing", acted)
			case tt.call != "" && (len(acted) != 1 || !strings.HasPrefix(acted[0], tt.call)):
				t.Errorf("asked the daemon %v, want one %q", acted, tt.call)
			}
			if !strings.Contains(m.flash, tt.flash) || (tt.flash == "" && m.flash != "") {
				t.Errorf("flash %q, want %q", m.flash, tt.flash)
			}
			if m.dialog != nil {
				t.Error("the dialog is still open")
			}
		})
	}

	// A failed action says so.
	src := newFixture()
	m := newTestModel(t, src, 80, 24)
	src.err = errors.New("409 run already finished")
	run(t, m, press(t, m, "C"))
	run(t, m, press(t, m, "y"))
	if !m.flashErr || !strings.Contains(m.flash, "cancelled failed: 409 run already finished") {
		t.Errorf("flash %q (error %v)", m.flash, m.flashErr)
	}
	// No examples: nothing to send.
	m = New(t.Context(), newFixture(), Options{Profile: colorprofile.ASCII})
	press(t, m, "E")
	if m.dialog != nil || !m.flashErr {
		t.Error("E without examples opened a dialog")
	}
}

// TestEventsPaneShowsSkipReason: an event whose run was Skipped shows why,
// next to the run, in the events pane.
func TestEventsPaneShowsSkipReason(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	runs := newRunsModel()
	runs.runs = []client.Run{{RunID: "01R", FunctionID: "order", EventID: "01E", Status: "Skipped", CreatedAt: &at,
		Error: `idempotency key "fn:order:o-1" already used by run 01Q`}}
	events := eventsModel{events: []client.StoredEvent{{InternalID: "01E", Name: "app/order.placed", ReceivedAt: &at}}}
	view := events.view(newStyles(colorprofile.ASCII, true), &runs, 200, 10, at)
	if !strings.Contains(view, `order Skipped (idempotency key "fn:order:o-1" already used by run 01Q)`) {
		t.Errorf("events pane lacks the skip reason:\n%s", view)
	}
}

// TestKeysReadAtOnce: keys typed fast reach the dash in one read, which
// Bubble Tea v1 delivered as one key message with several characters; the
// dash ignored them all. Each must act as if typed alone. (v2 delivers one
// message a character, but for a cluster of characters, which the dash
// splits in the same way.)
func TestKeysReadAtOnce(t *testing.T) {
	t.Parallel()
	read := func(s string) tea.KeyPressMsg { return tea.KeyPressMsg{Code: tea.KeyExtended, Text: s} }

	m := newTestModel(t, newFixture(), 80, 24)
	m.Update(read("jj"))
	if m.runs.cursor != 2 {
		t.Errorf("jj in one read: cursor %d, want 2", m.runs.cursor)
	}

	m = newTestModel(t, newFixture(), 80, 24)
	if _, cmd := m.Update(read("?q")); !quits(cmd) {
		t.Error("?q in one read does not quit")
	}

	// A status key, the filter key and the filter's text in one read.
	m = newTestModel(t, newFixture(), 80, 24)
	press(t, m, "5")
	m.Update(read("0/run4"))
	press(t, m, "enter")
	if got := ids(m.runs.visible()); !slices.Equal(got, []string{"0000RUN4"}) {
		t.Errorf("5, 0/run4 in one read, enter: runs %v (filter %q, status %q), want [0000RUN4]", got, m.runs.input.Value(), m.runs.status)
	}

	// In the filter, text read at once is text, commands included.
	m = newTestModel(t, newFixture(), 80, 24)
	press(t, m, "/")
	if _, cmd := m.Update(read("qR")); quits(cmd) || m.dialog != nil || m.runs.input.Value() != "qR" {
		t.Errorf("qR in one read while filtering: filter %q, quit %v, dialog %v", m.runs.input.Value(), quits(cmd), m.dialog != nil)
	}

	// A paste is text: in the filter whole, elsewhere never a command.
	paste := tea.PasteMsg{Content: "Ry"}
	m = newTestModel(t, newFixture(), 80, 24)
	if _, cmd := m.Update(paste); cmd != nil || m.dialog != nil || m.runs.cursor != 0 {
		t.Error("a paste outside the filter acted as keys")
	}
	press(t, m, "/")
	m.Update(paste)
	if m.runs.input.Value() != "Ry" {
		t.Errorf("pasted filter %q, want Ry", m.runs.input.Value())
	}
}

// quits reports whether cmd, or a command of its batch, quits.
func quits(cmd tea.Cmd) bool {
	if cmd == nil {
		return false
	}
	switch msg := cmd().(type) {
	case tea.QuitMsg:
		return true
	case tea.BatchMsg:
		return slices.ContainsFunc(msg, quits)
	}
	return false
}

// TestFilterLine: while the filter is typed, the runs pane's last line is
// the filter, its placeholder whole while it is empty, and never wider than
// the screen, however long the filter.
func TestFilterLine(t *testing.T) {
	t.Parallel()
	m := newTestModel(t, newFixture(), 80, 24)
	press(t, m, "/")
	view := m.View().Content
	checkFits(t, view, 80, 24)
	// The cursor, on the f, is the one escape without colours.
	if !strings.Contains(view, "/\x1b[7mf\x1b[munction, event or run id") {
		t.Errorf("the empty filter lacks its placeholder:\n%s", view)
	}
	for range 79 {
		press(t, m, "x")
	}
	view = m.View().Content
	checkFits(t, view, 80, 24)
	if m.runs.input.Value() != strings.Repeat("x", 79) || !strings.Contains(view, strings.Repeat("x", 70)+"\x1b[7m \x1b[m") {
		t.Errorf("a long filter %q shows as:\n%s", m.runs.input.Value(), view)
	}
}

// TestDialogWrapsItsText opens the rerun dialog of a run whose function
// has a long id: the sentence is wrapped inside the box, whole, where it
// was cut at "with the same trigger ev…".
func TestDialogWrapsItsText(t *testing.T) {
	t.Parallel()
	src := newFixture()
	src.runs[0].FunctionID = "contact-form-submitted-with-a-much-longer-name"
	m := newTestModel(t, src, 80, 24)
	press(t, m, "R")
	view := ansi.Strip(m.View().Content)
	var text []string
	for line := range strings.SplitSeq(view, "\n") {
		if i := strings.Index(line, "│"); i >= 0 {
			text = append(text, strings.TrimSpace(strings.Trim(strings.TrimSpace(line[i:]), "│")))
		}
	}
	joined := strings.Join(text, " ")
	if !strings.Contains(joined, "Starts a new run of contact-form-submitted-with-a-much-longer-name with the same trigger event.") || strings.Contains(joined, "…") {
		t.Errorf("the dialog does not hold the whole sentence:\n%s", view)
	}
}
