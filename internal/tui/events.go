package tui

import (
	"slices"
	"strings"
	"time"

	"github.com/dcyfr/cyberdrew/internal/client"
)

// eventsModel is the events pane: the latest events, each with the runs it
// triggered (from the runs pane's data: no read per event).
type eventsModel struct {
	events []client.StoredEvent // newest first
	cursor int
	offset int
}

func (e *eventsModel) update(msg runsMsg) {
	if msg.err != nil {
		return
	}
	e.events = mergeListed(e.events, msg.events, func(ev client.StoredEvent) string { return ev.InternalID })
	e.cursor = min(e.cursor, max(len(e.events)-1, 0))
}

// apply adds an event the stream announced.
func (e *eventsModel) apply(c client.Change) {
	if c.Kind != "event" || slices.ContainsFunc(e.events, func(ev client.StoredEvent) bool { return ev.InternalID == c.EventID }) {
		return
	}
	at := c.At
	ev := client.StoredEvent{InternalID: c.EventID, Name: c.EventName, ReceivedAt: &at}
	i, _ := slices.BinarySearchFunc(e.events, c.EventID, func(a client.StoredEvent, id string) int { return strings.Compare(id, a.InternalID) })
	e.events = slices.Insert(e.events, i, ev)
	if len(e.events) > 2*eventsLimit {
		e.events = e.events[:2*eventsLimit]
	}
}

func (e *eventsModel) selected() (client.StoredEvent, bool) {
	if e.cursor < 0 || e.cursor >= len(e.events) {
		return client.StoredEvent{}, false
	}
	return e.events[e.cursor], true
}

func (e *eventsModel) view(st styles, runs *runsModel, width, height int, now time.Time) string {
	byEvent := map[string][]client.Run{}
	for _, r := range runs.runs {
		for _, id := range eventIDs(r) {
			byEvent[id] = append(byEvent[id], r)
		}
	}
	const timeW, idW, ageW = 8, 8, 6
	nameW := min(max(width/3, 16), 32)
	runsW := max(width-2-timeW-idW-ageW-nameW-4, 10)
	widths := []int{timeW, ageW, idW, nameW, runsW}
	row := func(cols ...string) string {
		out := make([]string, len(cols))
		for i, c := range cols {
			out[i] = cell(c, widths[i])
		}
		return strings.Join(out, " ")
	}
	lines := []string{"  " + st.heading.Render(row("RECEIVED", "AGE", "EVENT", "NAME", "RUNS TRIGGERED"))}
	rows := max(height-2, 1)
	e.offset = window(e.cursor, e.offset, len(e.events), rows)
	for i := e.offset; i < min(e.offset+rows, len(e.events)); i++ {
		ev := e.events[i]
		var rs []string
		for _, r := range byEvent[ev.InternalID] {
			run := r.FunctionID + " " + st.statusText(r.Status)
			if r.Status == "Skipped" && r.Error != "" {
				run += " (" + r.Error + ")"
			}
			rs = append(rs, run)
		}
		triggered := strings.Join(rs, ", ")
		if triggered == "" {
			triggered = st.dim.Render("none")
		}
		lines = append(lines, marker(st, i == e.cursor, row(clockTime(ev.ReceivedAt), ago(ev.ReceivedAt, now), shortID(ev.InternalID), ev.Name, triggered)))
	}
	if len(e.events) == 0 {
		lines = append(lines, "  "+st.dim.Render("no events yet: send one with E"))
	}
	for len(lines) < height-1 {
		lines = append(lines, "")
	}
	return strings.Join(lines, "\n") + "\n" + st.dim.Render(fit("enter: the event's runs in the runs pane", width))
}

// eventIDs are the events a run was fed (a debounced run has several).
func eventIDs(r client.Run) []string {
	if len(r.EventIDs) > 0 {
		return r.EventIDs
	}
	if r.EventID != "" {
		return []string{r.EventID}
	}
	return nil
}
