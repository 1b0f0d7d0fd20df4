package tui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"charm.land/bubbles/v2/viewport"
	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/dcyfr/cyberdrew/internal/client"
)

// detailMsg is a run read with its steps and trigger event.
type detailMsg struct {
	runID string
	run   client.RunDetail
	event client.StoredEvent
	err   error
}

func fetchDetail(ctx context.Context, src Source, id string) tea.Cmd {
	return func() tea.Msg {
		run, err := src.Run(ctx, id)
		if err != nil {
			return detailMsg{runID: id, err: err}
		}
		msg := detailMsg{runID: id, run: run}
		if run.EventID != "" {
			msg.event, msg.err = src.Event(ctx, run.EventID)
		}
		return msg
	}
}

// detailModel is one run: its trigger event's payload, a timeline of its
// steps and its output, in a scrollable viewport.
type detailModel struct {
	runID string
	run   *client.RunDetail
	event *client.StoredEvent
	err   string
	vp    viewport.Model
}

func newDetailModel(id string, width, height int) *detailModel {
	return &detailModel{runID: id, vp: viewport.New(viewport.WithWidth(width), viewport.WithHeight(height))}
}

func (d *detailModel) update(msg detailMsg, st styles, now time.Time) {
	if msg.runID != d.runID {
		return
	}
	if msg.err != nil && msg.run.RunID == "" {
		d.err = msg.err.Error()
	} else {
		d.err = ""
		run, ev := msg.run, msg.event
		d.run = &run
		if ev.InternalID != "" {
			d.event = &ev
		}
	}
	d.render(st, now)
}

func (d *detailModel) resize(width, height int, st styles, now time.Time) {
	d.vp.SetWidth(width)
	d.vp.SetHeight(height)
	d.render(st, now)
}

// render rebuilds the viewport's content, keeping the scroll position.
func (d *detailModel) render(st styles, now time.Time) {
	off := d.vp.YOffset()
	d.vp.SetContent(d.content(st, now))
	d.vp.SetYOffset(off)
}

func (d *detailModel) content(st styles, now time.Time) string {
	w := max(d.vp.Width(), 20)
	if d.run == nil {
		if d.err != "" {
			return st.errText.Render("run " + d.runID + ": " + d.err)
		}
		return st.dim.Render("loading run " + d.runID + "…")
	}
	r := d.run
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s · %s · %s · attempt %d\n", st.title.Render("Run"), r.RunID, st.bold.Render(r.FunctionID), st.statusText(r.Status), r.Attempt)
	trigger := r.EventID
	if d.event != nil {
		trigger = d.event.Name + " (" + r.EventID + ")"
	}
	fmt.Fprintf(&b, "trigger  %s\n", trigger)
	fmt.Fprintf(&b, "created  %s · started %s · ended %s · elapsed %s", clockTime(r.CreatedAt), clockTime(r.RunStartedAt), clockTime(r.EndedAt), elapsed(r.Run, now))
	if n := next(r.Run, now); n != "-" {
		fmt.Fprintf(&b, " · next %s", n)
	}
	b.WriteString("\n")
	if r.Error != "" {
		b.WriteString(wrapped(st.errText, "error    ", r.Error, w) + "\n")
	}

	b.WriteString("\n" + st.heading.Render("Steps") + "\n")
	if len(r.Steps) == 0 {
		b.WriteString(st.dim.Render("  no step recorded") + "\n")
	}
	resumed := resumedAt(r.Steps)
	for _, s := range r.Steps {
		b.WriteString(stepLine(st, r.Run, s, resumed, w) + "\n")
		for i, a := range s.Attempts {
			if a.Error != "" {
				b.WriteString(wrapped(st.errText, fmt.Sprintf("      attempt %d: ", i+1), a.Error, w) + "\n")
			}
		}
		if s.Error != "" && (len(s.Attempts) == 0 || s.Attempts[len(s.Attempts)-1].Error != s.Error) {
			b.WriteString(wrapped(st.errText, "      error: ", s.Error, w) + "\n")
		}
	}

	if len(r.Deliveries) > 0 {
		b.WriteString("\n" + st.heading.Render("Delivery") + "\n")
		for _, dl := range r.Deliveries {
			line := fmt.Sprintf("  %-13s %-17s %s", dl.Email, dl.Status, dl.At.UTC().Format(time.DateTime))
			if dl.Status == "bounced" || dl.Status == "complained" || dl.Status == "failed" {
				line = st.errText.Render(line)
			}
			b.WriteString(fit(line, w) + "\n")
		}
	}

	b.WriteString("\n" + st.heading.Render("Event payload") + "\n")
	if d.event != nil {
		b.WriteString(indent(pretty(d.event.Data)) + "\n")
	} else {
		b.WriteString(st.dim.Render("  (event not available)") + "\n")
	}
	b.WriteString("\n" + st.heading.Render("Output") + "\n")
	b.WriteString(indent(pretty(r.Output)) + "\n")
	for _, s := range r.Steps {
		if len(s.Output) > 0 && string(s.Output) != "null" {
			b.WriteString(st.dim.Render("  step "+s.ID) + "\n" + indent(indent(pretty(s.Output))) + "\n")
		}
	}
	return b.String()
}

// resumedAt is the last time the run's handler was entered again after a
// step: a retry attempt's start or a sleep's wake-up. Steps that ended
// before it were replayed from their stored result (memoized).
func resumedAt(steps []client.Step) time.Time {
	var t time.Time
	for _, s := range steps {
		for i, a := range s.Attempts {
			if i > 0 && a.StartedAt != nil && a.StartedAt.After(t) {
				t = *a.StartedAt
			}
		}
		if s.Kind == "sleep" && s.Status == "Completed" && s.WakeAt != nil && s.WakeAt.After(t) {
			t = *s.WakeAt
		}
	}
	return t
}

// stepLine is one step of the timeline: its status, offset from the run's
// start, duration, attempts and whether its result was replayed.
func stepLine(st styles, run client.Run, s client.Step, resumed time.Time, w int) string {
	icon := map[string]string{"Completed": "✓", "Failed": "✗", "Running": "▶", "Sleeping": "☾", "Waiting": "…"}[s.Status]
	if icon == "" {
		icon = "·"
	}
	offset := "-"
	if s.StartedAt != nil && run.RunStartedAt != nil {
		offset = "+" + span(s.StartedAt.Sub(*run.RunStartedAt))
	}
	dur := "-"
	if s.StartedAt != nil && s.EndedAt != nil {
		dur = span(s.EndedAt.Sub(*s.StartedAt))
	}
	how := "executed"
	if s.Kind == "sleep" {
		how = "slept"
	}
	if s.Status == "Completed" && s.EndedAt != nil && s.EndedAt.Before(resumed) {
		how = "memoized"
	}
	if s.Status != "Completed" {
		how = strings.ToLower(s.Status)
	}
	// A sleep, a wait or a store-only step runs no attempt of its own.
	attempts := "-"
	if n := len(s.Attempts); n > 0 {
		attempts = fmt.Sprintf("%d attempt", n)
		if n != 1 {
			attempts += "s"
		}
	}
	line := fmt.Sprintf("  %s %s %s %s %s %s %s", st.paint(s.Status, icon), cell(s.ID, 24), cell(s.Kind, 6), cell(offset, 8), cell(dur, 7), cell(attempts, 10), how)
	return fit(line, w)
}

// pretty indents a JSON document; anything else is shown as it is.
func pretty(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "null"
	}
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return string(raw)
	}
	return b.String()
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }

// wrapped is label and text in style, the text wrapped to w columns under
// itself (its lines after the first indented as far as the label): an
// error is the one thing a failed run is opened for, and the viewport cut
// it at the screen's edge.
func wrapped(style lipgloss.Style, label, text string, w int) string {
	pad := lipgloss.Width(label)
	lines := strings.Split(ansi.Wrap(text, max(w-pad, 10), ""), "\n")
	for i, l := range lines {
		if i == 0 {
			lines[i] = style.Render(label + l)
		} else {
			lines[i] = style.Render(strings.Repeat(" ", pad) + l)
		}
	}
	return strings.Join(lines, "\n")
}

func (d *detailModel) view() string { return d.vp.View() }
