package tui

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"charm.land/bubbles/v2/key"
	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/dcyfr/cyberdrew/internal/client"
)

// actionMsg is the result of an action the user confirmed.
type actionMsg struct {
	what string // "rerun 1A2B3C4D started as 5E6F7G8H"
	err  error
}

// dialogModel asks before an action: either a question answered y or n, or
// a list of test events to pick from first.
type dialogModel struct {
	title   string
	body    string
	run     tea.Cmd // the action, once confirmed
	choices []Example
	pick    int
	send    func(Example) (body string, run tea.Cmd)
}

func confirmDialog(title, body string, run tea.Cmd) *dialogModel {
	return &dialogModel{title: title, body: body, run: run}
}

func pickDialog(examples []Example, send func(Example) (string, tea.Cmd)) *dialogModel {
	return &dialogModel{title: "Send a test event", choices: examples, send: send}
}

// key handles a key; done says the dialog closes, cmd is the action when
// it was confirmed.
func (d *dialogModel) key(k keyMap, msg tea.KeyPressMsg) (cmd tea.Cmd, done bool) {
	if d.run == nil {
		switch {
		case key.Matches(msg, k.Up):
			d.pick = max(d.pick-1, 0)
		case key.Matches(msg, k.Down):
			d.pick = min(d.pick+1, len(d.choices)-1)
		case key.Matches(msg, k.Open):
			ex := d.choices[d.pick]
			d.title = "Send " + ex.Name + "?"
			d.body, d.run = d.send(ex)
		case key.Matches(msg, k.Deny):
			return nil, true
		}
		return nil, false
	}
	switch {
	case key.Matches(msg, k.Confirm):
		return d.run, true
	case key.Matches(msg, k.Deny):
		return nil, true
	}
	return nil, false
}

func (d *dialogModel) view(st styles, width, height int) string {
	inner := max(min(width-6, 72), 20)
	var b strings.Builder
	b.WriteString(st.title.Render(d.title) + "\n\n")
	if d.run == nil {
		for i, ex := range d.choices {
			b.WriteString(marker(st, i == d.pick, ex.Name) + "\n")
		}
		b.WriteString("\n" + st.dim.Render("enter: choose · esc: cancel"))
	} else {
		// The body is wrapped to the box's text width (inside its padding),
		// not cut: a long function name cut the sentence short.
		lines := strings.Split(ansi.Wordwrap(d.body, inner-2, ""), "\n")
		if max(height-8, 1) < len(lines) {
			lines = append(lines[:max(height-9, 0)], "…")
		}
		b.WriteString(fit(strings.Join(lines, "\n"), inner-2) + "\n\n")
		b.WriteString(st.key.Render("y") + " confirm · " + st.key.Render("n") + " cancel")
	}
	// The box's width counts its border (two columns) since Lip Gloss v2.
	box := st.box.Width(inner + 2).Render(b.String())
	return lipgloss.Place(width, height, lipgloss.Center, lipgloss.Center, box)
}

// The actions: each runs against the daemon and reports an actionMsg.

func rerunCmd(ctx context.Context, src Source, id string) tea.Cmd {
	return func() tea.Msg {
		ref, err := src.Rerun(ctx, id)
		return actionMsg{what: fmt.Sprintf("rerun of %s started as %s", shortID(id), shortID(ref.RunID)), err: err}
	}
}

func cancelCmd(ctx context.Context, src Source, id string) tea.Cmd {
	return func() tea.Msg {
		_, err := src.Cancel(ctx, id)
		return actionMsg{what: "cancelled " + shortID(id), err: err}
	}
}

func invokeCmd(ctx context.Context, src Source, fn string) tea.Cmd {
	return func() tea.Msg {
		inv, err := src.Invoke(ctx, fn, nil)
		ids := make([]string, len(inv.RunIDs))
		for i, id := range inv.RunIDs {
			ids[i] = shortID(id)
		}
		return actionMsg{what: fmt.Sprintf("invoked %s: run %s", fn, strings.Join(ids, ", ")), err: err}
	}
}

func sendCmd(ctx context.Context, src Source, ex Example) tea.Cmd {
	return func() tea.Msg {
		ids, err := src.Send(ctx, client.Event{Name: ex.Name, Data: ex.Data})
		what := "sent " + ex.Name
		if len(ids) == 1 {
			what += " as event " + shortID(ids[0])
		}
		return actionMsg{what: what, err: err}
	}
}

// examplePayload is an example's data for the dialog.
func examplePayload(ex Example) string {
	if len(ex.Data) == 0 {
		return "{}"
	}
	return pretty(json.RawMessage(ex.Data))
}
