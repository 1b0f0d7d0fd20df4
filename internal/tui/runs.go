package tui

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"charm.land/bubbles/v2/key"
	"charm.land/bubbles/v2/textinput"
	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"

	"github.com/dcyfr/cyberdrew/internal/client"
)

// runsModel is the runs pane: the latest runs, patched live from the
// stream, with a text filter, a status filter and an age order.
type runsModel struct {
	runs       []client.Run // newest first
	steps      map[string]string
	eventNames map[string]string
	err        string

	input       textinput.Model
	filtering   bool
	status      string // "" for all
	oldestFirst bool
	selID       string
	follow      bool // the cursor stays on the first row as runs come in
	cursor      int
	offset      int
}

func newRunsModel() runsModel {
	in := textinput.New()
	in.Prompt = "/"
	in.Placeholder = "function, event or run id"
	in.CharLimit = 80
	r := runsModel{steps: map[string]string{}, eventNames: map[string]string{}, input: in, follow: true}
	r.setStyles(true, false)
	return r
}

// setStyles draws the filter as Bubbles v1 did, for the background: a plain
// prompt and text, a grey placeholder (plain without colours) and a steady
// block cursor (in reverse video, the one attribute drawn without colours).
func (r *runsModel) setStyles(dark, plain bool) {
	s := textinput.DefaultStyles(dark)
	s.Focused.Prompt, s.Blurred.Prompt = lipgloss.NewStyle(), lipgloss.NewStyle()
	s.Focused.Text, s.Blurred.Text = lipgloss.NewStyle(), lipgloss.NewStyle()
	if plain {
		s.Focused.Placeholder, s.Blurred.Placeholder = lipgloss.NewStyle(), lipgloss.NewStyle()
	}
	s.Cursor.Color, s.Cursor.Blink = nil, false
	r.input.SetStyles(s)
}

// update takes a fresh listing. Runs the stream created after the listing
// was read stay in.
func (r *runsModel) update(msg runsMsg) {
	if msg.err != nil {
		r.err = msg.err.Error()
		return
	}
	r.err = ""
	r.runs = mergeListed(r.runs, msg.runs, func(run client.Run) string { return run.RunID })
	for _, e := range msg.events {
		r.eventNames[e.InternalID] = e.Name
	}
	r.trim()
}

// apply patches the runs with one change; it reports whether the change
// named a run the pane has not seen, which a listing should fill in.
func (r *runsModel) apply(c client.Change) (unknown bool) {
	switch c.Kind {
	case "event":
		r.eventNames[c.EventID] = c.EventName
	case "run":
		at := c.At
		i := r.index(c.RunID)
		if i < 0 {
			run := client.Run{RunID: c.RunID, FunctionID: c.FunctionID, EventID: c.EventID, Status: c.Status, CreatedAt: &at}
			r.insert(run)
			return true
		}
		run := &r.runs[i]
		run.Status = c.Status
		if c.Status == "Running" && run.RunStartedAt == nil {
			run.RunStartedAt = &at
		}
		if client.Finished(c.Status) && run.EndedAt == nil {
			run.EndedAt = &at
		}
	case "step":
		r.steps[c.RunID] = c.StepID
		return r.index(c.RunID) < 0
	}
	return false
}

func (r *runsModel) index(id string) int {
	for i := range r.runs {
		if r.runs[i].RunID == id {
			return i
		}
	}
	return -1
}

// insert places a run by id (ULIDs sort by creation), newest first.
func (r *runsModel) insert(run client.Run) {
	i, _ := slices.BinarySearchFunc(r.runs, run.RunID, func(a client.Run, id string) int { return strings.Compare(id, a.RunID) })
	r.runs = slices.Insert(r.runs, i, run)
	r.trim()
}

// trim keeps the pane's memory bounded.
func (r *runsModel) trim() {
	if len(r.runs) > 2*runsLimit {
		for _, run := range r.runs[2*runsLimit:] {
			delete(r.steps, run.RunID)
		}
		r.runs = r.runs[:2*runsLimit]
	}
}

// trigger names a run's event.
func (r *runsModel) trigger(run client.Run) string {
	if n, ok := r.eventNames[run.EventID]; ok {
		return n
	}
	if run.EventID == "" {
		return "-"
	}
	return "event " + shortID(run.EventID)
}

// visible is the filtered runs in the chosen order.
func (r *runsModel) visible() []client.Run {
	q := strings.ToLower(strings.TrimSpace(r.input.Value()))
	var out []client.Run
	for _, run := range r.runs {
		if r.status != "" && run.Status != r.status {
			continue
		}
		if q != "" && !strings.Contains(strings.ToLower(run.FunctionID+" "+r.trigger(run)+" "+run.RunID+" "+run.EventID), q) {
			continue
		}
		out = append(out, run)
	}
	if r.oldestFirst {
		slices.Reverse(out)
	}
	return out
}

// selected is the run under the cursor.
func (r *runsModel) selected() (client.Run, bool) {
	vis := r.visible()
	r.locate(vis)
	if r.cursor < 0 || r.cursor >= len(vis) {
		return client.Run{}, false
	}
	return vis[r.cursor], true
}

// locate keeps the cursor on the selected run while rows come and go, or
// on the first row when it follows.
func (r *runsModel) locate(vis []client.Run) {
	if r.follow {
		r.selID, r.cursor = "", 0
	}
	if r.selID != "" {
		for i, run := range vis {
			if run.RunID == r.selID {
				r.cursor = i
				return
			}
		}
	}
	r.cursor = min(max(r.cursor, 0), max(len(vis)-1, 0))
	if len(vis) > 0 {
		r.selID = vis[r.cursor].RunID
	}
}

// setFilter shows only the runs matching q.
func (r *runsModel) setFilter(q string) {
	r.input.SetValue(q)
	r.selID, r.cursor, r.follow = "", 0, true
}

// key handles the pane's own keys; it reports whether it used the key.
func (r *runsModel) key(k keyMap, msg tea.KeyPressMsg, page int) (tea.Cmd, bool) {
	if r.filtering {
		switch msg.String() {
		case "enter":
			r.filtering = false
			r.input.Blur()
			return nil, true
		case "esc":
			r.filtering = false
			r.input.Blur()
			r.setFilter("")
			return nil, true
		}
		var cmd tea.Cmd
		r.input, cmd = r.input.Update(msg)
		r.selID, r.cursor, r.follow = "", 0, true
		return cmd, true
	}
	vis := r.visible()
	r.locate(vis)
	if c, ok := move(k, msg, r.cursor, len(vis), page); ok {
		r.cursor, r.follow = c, c == 0
		if len(vis) > 0 {
			r.selID = vis[c].RunID
		}
		return nil, true
	}
	switch {
	case key.Matches(msg, k.Filter):
		r.filtering = true
		return r.input.Focus(), true
	case key.Matches(msg, k.Status):
		r.status = statusKeys[msg.Text[0]-'0']
		r.selID, r.cursor, r.follow = "", 0, true
		return nil, true
	case key.Matches(msg, k.Sort):
		r.oldestFirst = !r.oldestFirst
		return nil, true
	case key.Matches(msg, k.Back) && (r.input.Value() != "" || r.status != ""):
		r.setFilter("")
		r.status = ""
		return nil, true
	}
	return nil, false
}

// paste types pasted text in the filter.
func (r *runsModel) paste(msg tea.PasteMsg) tea.Cmd {
	var cmd tea.Cmd
	r.input, cmd = r.input.Update(msg)
	r.selID, r.cursor, r.follow = "", 0, true
	return cmd
}

// view draws the table in height lines, its last one the filter line.
func (r *runsModel) view(st styles, width, height int, now time.Time) string {
	const (
		idW, statusW, attW, elapsedW, nextW = 8, 9, 3, 7, 8
		gaps                                = 7
	)
	flex := max(width-2-idW-statusW-attW-elapsedW-nextW-gaps, 24)
	fnW := flex * 3 / 8
	trigW := flex * 3 / 8
	stepW := flex - fnW - trigW
	widths := []int{idW, fnW, trigW, statusW, stepW, attW, elapsedW, nextW}
	row := func(cols ...string) string {
		out := make([]string, len(cols))
		for i, c := range cols {
			out[i] = cell(c, widths[i])
		}
		return strings.Join(out, " ")
	}
	vis := r.visible()
	r.locate(vis)
	lines := []string{"  " + st.heading.Render(row("RUN", "FUNCTION", "TRIGGER", "STATUS", "STEP", "ATT", "ELAPSED", "NEXT"))}
	rows := max(height-2, 1)
	r.offset = window(r.cursor, r.offset, len(vis), rows)
	for i := r.offset; i < min(r.offset+rows, len(vis)); i++ {
		run := vis[i]
		step := r.steps[run.RunID]
		if step == "" {
			step = "-"
		}
		lines = append(lines, marker(st, i == r.cursor, row(shortID(run.RunID), run.FunctionID, r.trigger(run),
			st.statusText(run.Status), step, fmt.Sprint(run.Attempt), elapsed(run, now), next(run, now))))
	}
	if len(vis) == 0 {
		msg := "no runs yet: send an event with E"
		if len(r.runs) > 0 {
			msg = "no run matches the filter (esc clears it)"
		}
		lines = append(lines, "  "+st.dim.Render(msg))
	}
	for len(lines) < height-1 {
		lines = append(lines, "")
	}
	// The filter fits the line: the prompt, its text scrolled to show the
	// cursor, and the cursor. (Bubbles v2 shows only the first character
	// of the placeholder of an input without a width.)
	r.input.SetWidth(max(width-2, 1))
	return strings.Join(lines, "\n") + "\n" + fit(r.statusLine(st, len(vis)), width)
}

func (r *runsModel) statusLine(st styles, shown int) string {
	if r.filtering {
		return r.input.View()
	}
	parts := []string{fmt.Sprintf("%d of the latest %d runs", shown, len(r.runs))}
	if q := r.input.Value(); q != "" {
		parts = append(parts, "filter "+st.bold.Render(q))
	}
	status := "all"
	if r.status != "" {
		status = st.statusText(r.status)
	}
	parts = append(parts, "status "+status)
	order := "newest first"
	if r.oldestFirst {
		order = "oldest first"
	}
	parts = append(parts, order)
	if r.err != "" {
		parts = append(parts, st.errText.Render(r.err))
	}
	return st.dim.Render(strings.Join(parts, " · "))
}

// elapsed is how long a run has been running, or ran.
func elapsed(run client.Run, now time.Time) string {
	if run.RunStartedAt == nil {
		return "-"
	}
	end := now
	if run.EndedAt != nil {
		end = *run.EndedAt
	}
	return span(end.Sub(*run.RunStartedAt))
}

// next is when an unfinished run is due again: its retry, wake-up or delayed
// start.
func next(run client.Run, now time.Time) string {
	if run.Finished() || run.AvailableAt == nil || !run.AvailableAt.After(now) {
		return "-"
	}
	return until(run.AvailableAt, now)
}

// mergeListed is a fresh listing (newest first) with the items shown before
// it that it lacks but that are newer than its oldest: those the stream
// announced while the listing was read. Ids sort by time (ULIDs).
func mergeListed[T any](shown, listed []T, id func(T) string) []T {
	if len(listed) == 0 {
		return listed
	}
	in := make(map[string]bool, len(listed))
	for _, v := range listed {
		in[id(v)] = true
	}
	oldest := id(listed[len(listed)-1])
	var newer []T
	for _, v := range shown {
		if k := id(v); !in[k] && k > oldest {
			newer = append(newer, v)
		}
	}
	return append(newer, listed...)
}
