package tui

import (
	"fmt"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
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
				view := m.View().Content
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

// press sends one key, by its name in tea.KeyPressMsg.String's words, and runs
// the command it returns when that command answers at once (a read of the
// fake source or an action).
func press(t *testing.T, m *Model, k string) tea.Cmd {
	t.Helper()
	_, cmd := m.Update(keyMsg(k))
	return cmd
}

func keyMsg(k string) tea.KeyPressMsg {
	special := map[string]tea.KeyPressMsg{
		"enter": {Code: tea.KeyEnter}, "esc": {Code: tea.KeyEscape}, "tab": {Code: tea.KeyTab},
		"shift+tab": {Code: tea.KeyTab, Mod: tea.ModShift},
		"up":        {Code: tea.KeyUp}, "down": {Code: tea.KeyDown}, "pgup": {Code: tea.KeyPgUp}, "pgdown": {Code: tea.KeyPgDown},
		"home": {Code: tea.KeyHome}, "end": {Code: tea.KeyEnd}, "ctrl+c": {Code: 'c', Mod: tea.ModCtrl},
		"backspace": {Code: tea.KeyBackspace}, "left": {Code: tea.KeyLeft}, "right": {Code: tea.KeyRight},
		"ctrl+u": {Code: 'u', Mod: tea.ModCtrl}, "ctrl+d": {Code: 'd', Mod: tea.ModCtrl}, "space": {Code: tea.KeySpace, Text: " "},
	}
	if kp, ok := special[k]; ok {
		if kp.String() != k {
			panic("keyMsg: " + k + " reads as " + kp.String())
		}
		return kp
	}
	runes := []rune(k)
	if len(runes) != 1 {
		panic("keyMsg: one key at a time: " + k)
	}
	return keyPress(runes[0])
}
