package tui

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/dcyfr/cyberdrew/internal/client"
)

// cell fits s, which may hold colour escapes, to exactly w columns.
func cell(s string, w int) string {
	if w <= 0 {
		return ""
	}
	if lipgloss.Width(s) > w {
		s = ansi.Truncate(s, w, "…")
	}
	return s + strings.Repeat(" ", max(w-lipgloss.Width(s), 0))
}

// fit cuts every line of s to w columns.
func fit(s string, w int) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if lipgloss.Width(l) > w {
			lines[i] = ansi.Truncate(l, w, "…")
		}
	}
	return strings.Join(lines, "\n")
}

// block makes s exactly h lines of w columns: cut or padded.
func block(s string, w, h int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > h {
		lines = lines[:h]
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	for i, l := range lines {
		lines[i] = cell(l, w)
	}
	return strings.Join(lines, "\n")
}

// shortID is the tail of a ULID, where its randomness is.
func shortID(id string) string {
	const n = 8
	if len(id) <= n {
		return id
	}
	return id[len(id)-n:]
}

// span is a compact duration: 850ms, 12s, 4m05s, 3h20m, 2d.
func span(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// ago is how long before now t was ("-" when unknown).
func ago(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return span(now.Sub(*t))
}

// until is how long after now t is: "in 12s", "due" when past.
func until(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	if !t.After(now) {
		return "due"
	}
	return "in " + span(t.Sub(now))
}

// clockTime is t as hh:mm:ss in local time.
func clockTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.Local().Format("15:04:05")
}

// window scrolls a list of n rows shown h at a time so that cursor stays
// visible; it returns the first row to show.
func window(cursor, offset, n, h int) int {
	if h <= 0 || n <= h {
		return 0
	}
	if cursor < offset {
		offset = cursor
	}
	if cursor >= offset+h {
		offset = cursor - h + 1
	}
	return min(max(offset, 0), n-h)
}

// move applies a navigation key to cursor over n rows, page rows at a time.
func move(k keyMap, msg tea.KeyPressMsg, cursor, n, page int) (int, bool) {
	switch {
	case key.Matches(msg, k.Up):
		cursor--
	case key.Matches(msg, k.Down):
		cursor++
	case key.Matches(msg, k.PageUp):
		cursor -= max(page, 1)
	case key.Matches(msg, k.PageDown):
		cursor += max(page, 1)
	case key.Matches(msg, k.Top):
		cursor = 0
	case key.Matches(msg, k.Bottom):
		cursor = n - 1
	default:
		return cursor, false
	}
	return min(max(cursor, 0), max(n-1, 0)), true
}

// explain is err for the screen, in few words: a key the daemon refused
// names what sets it, as the command line does.
func explain(err error) string {
	var (
		ae *client.APIError
		ue *client.UnreachableError
	)
	if errors.As(err, &ae) {
		if key, setting, ok := ae.RefusedKey(); ok {
			return key + " refused: set " + setting
		}
	}
	if errors.As(err, &ue) {
		// The dial's own words ("dial tcp 127.0.0.1:8288: connect:
		// connection refused") pushed since when off the banner at 120
		// columns: the innermost cause says it.
		cause := ue.Err
		for next := errors.Unwrap(cause); next != nil; next = errors.Unwrap(cause) {
			cause = next
		}
		if cause == nil {
			return "cannot reach the daemon at " + ue.URL
		}
		return "cannot reach the daemon at " + ue.URL + ": " + cause.Error()
	}
	return err.Error()
}
