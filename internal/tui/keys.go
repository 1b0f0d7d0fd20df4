package tui

import (
	"strings"

	"charm.land/bubbles/v2/key"
)

// keyMap is every key of the dash. Keys that change the daemon's state are
// upper-case and ask for confirmation.
type keyMap struct {
	Quit, Help, NextPane, PrevPane                  key.Binding
	Up, Down, PageUp, PageDown, Top, Bottom         key.Binding
	Open, Back, Filter, Status, Sort                key.Binding
	Rerun, Cancel, Invoke, SendEvent, Confirm, Deny key.Binding
}

// statusKeys are the status filter keys of the runs pane, "0" for all.
var statusKeys = []string{"", "Queued", "Running", "Sleeping", "Completed", "Failed", "Cancelled", "Skipped"}

func newKeyMap() keyMap {
	b := func(help, desc string, keys ...string) key.Binding {
		return key.NewBinding(key.WithKeys(keys...), key.WithHelp(help, desc))
	}
	return keyMap{
		Quit:      b("q", "quit", "q", "ctrl+c"),
		Help:      b("?", "all keys", "?"),
		NextPane:  b("tab", "next pane", "tab", "right", "l"),
		PrevPane:  b("shift+tab", "previous pane", "shift+tab", "left", "h"),
		Up:        b("↑/k", "up", "up", "k"),
		Down:      b("↓/j", "down", "down", "j"),
		PageUp:    b("pgup", "page up", "pgup", "ctrl+u"),
		PageDown:  b("pgdn", "page down", "pgdown", "ctrl+d", "space"),
		Top:       b("g", "top", "home", "g"),
		Bottom:    b("G", "bottom", "end", "G"),
		Open:      b("enter", "open", "enter"),
		Back:      b("esc", "back / clear", "esc", "backspace"),
		Filter:    b("/", "filter runs (function, event, id)", "/"),
		Status:    b("0-7", "status filter", "0", "1", "2", "3", "4", "5", "6", "7"),
		Sort:      b("o", "oldest/newest first", "o"),
		Rerun:     b("R", "rerun the run", "R"),
		Cancel:    b("C", "cancel the run", "C"),
		Invoke:    b("I", "invoke the function", "I"),
		SendEvent: b("E", "send a test event", "E"),
		Confirm:   b("y", "confirm", "y", "Y", "enter"),
		Deny:      b("n", "cancel", "n", "N", "esc", "q"),
	}
}

// ShortHelp is the footer's line.
func (k keyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.NextPane, k.Open, k.Filter, k.Status, k.Rerun, k.Cancel, k.Invoke, k.SendEvent, k.Help, k.Quit}
}

// FullHelp is the ? screen: every key.
func (k keyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{
		{k.NextPane, k.PrevPane, k.Up, k.Down, k.PageUp, k.PageDown, k.Top, k.Bottom},
		{k.Open, k.Back, k.Filter, k.Status, k.Sort, k.Help, k.Quit},
		{k.Rerun, k.Cancel, k.Invoke, k.SendEvent, k.Confirm, k.Deny},
	}
}

// helpView lists every key in as many columns as fit in width.
func (k keyMap) helpView(st styles, width int) string {
	var all []key.Binding
	for _, col := range k.FullHelp() {
		all = append(all, col...)
	}
	cols := max(min(width/38, 3), 1)
	colW := width / cols
	rows := (len(all) + cols - 1) / cols
	lines := make([]string, rows)
	for i, b := range all {
		h := b.Help()
		entry := cell(st.key.Render(h.Key), 10) + " " + h.Desc
		lines[i%rows] += cell(entry, colW)
	}
	legend := []string{"status keys: 0 all"}
	for i, s := range statusKeys[1:] {
		legend = append(legend, string(rune('1'+i))+" "+s)
	}
	return strings.Join(lines, "\n") + "\n\n" + st.dim.Render(wrap(strings.Join(legend, " · "), width))
}

// wrap breaks text at spaces to lines of at most width columns.
func wrap(text string, width int) string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		if line != "" && len([]rune(line))+1+len([]rune(w)) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return strings.Join(append(lines, line), "\n")
}
