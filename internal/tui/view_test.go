package tui

import (
	"fmt"
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/exp/golden"
)

// TestViewGolden draws every screen at 80×24 and 120×40 with the colour
// profile pinned to ASCII; go test -update rewrites the goldens.
func TestViewGolden(t *testing.T) {
	t.Parallel()
	screens := []struct {
		name string
		keys []string
		prep func(m *Model)
	}{
		{name: "runs"},
		{name: "functions", keys: []string{"shift+tab"}},
		{name: "events", keys: []string{"tab"}},
		{name: "detail", keys: []string{"G", "enter"}},
		{name: "help", keys: []string{"?"}},
		{name: "confirm-rerun", keys: []string{"R"}},
		{name: "send-pick", keys: []string{"E"}},
		{name: "filtered", keys: []string{"/", "t", "r", "e", "n", "d", "enter", "5"}},
		{name: "disconnected", prep: func(m *Model) {
			m.Update(streamEndedMsg{err: fmt.Errorf("cannot reach the daemon")})
		}},
	}
	for _, size := range [][2]int{{80, 24}, {120, 40}} {
		for _, s := range screens {
			t.Run(fmt.Sprintf("%s/%dx%d", s.name, size[0], size[1]), func(t *testing.T) {
				t.Parallel()
				src := newFixture()
				m := newTestModel(t, src, size[0], size[1])
				if s.prep != nil {
					s.prep(m)
				}
				for _, k := range s.keys {
					press(t, m, k)
				}
				if s.name == "detail" {
					m.Update(fetchDetail(t.Context(), src, m.detail.runID)())
				}
				view := m.View()
				checkFits(t, view, size[0], size[1])
				golden.RequireEqual(t, []byte(view))
			})
		}
	}
}

// checkFits fails when the view is not exactly w×h.
func checkFits(t *testing.T, view string, w, h int) {
	t.Helper()
	lines := strings.Split(view, "\n")
	if len(lines) != h {
		t.Errorf("view has %d lines, want %d", len(lines), h)
	}
	for i, l := range lines {
		if lw := lipgloss.Width(l); lw > w {
			t.Errorf("line %d is %d wide, want at most %d: %q", i, lw, w, l)
		}
	}
}

// press sends one key, by its name in tea.KeyMsg.String's words, and runs
// the command it returns when that command answers at once (a read of the
// fake source or an action).
func press(t *testing.T, m *Model, k string) tea.Cmd {
	t.Helper()
	_, cmd := m.Update(keyMsg(k))
	return cmd
}

func keyMsg(k string) tea.KeyMsg {
	special := map[string]tea.KeyType{
		"enter": tea.KeyEnter, "esc": tea.KeyEsc, "tab": tea.KeyTab, "shift+tab": tea.KeyShiftTab,
		"up": tea.KeyUp, "down": tea.KeyDown, "pgup": tea.KeyPgUp, "pgdown": tea.KeyPgDown,
		"home": tea.KeyHome, "end": tea.KeyEnd, "ctrl+c": tea.KeyCtrlC, "backspace": tea.KeyBackspace,
		"left": tea.KeyLeft, "right": tea.KeyRight, "ctrl+u": tea.KeyCtrlU, "ctrl+d": tea.KeyCtrlD,
	}
	if kt, ok := special[k]; ok {
		return tea.KeyMsg{Type: kt}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
}
