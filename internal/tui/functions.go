package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/x/ansi"

	"github.com/dcyfr/cyberdrew/internal/client"
)

// functionsModel is the functions pane: each registered function with its
// triggers, next cron fire, last run and last hour's counters.
type functionsModel struct {
	fns    []client.Function
	err    string
	cursor int
	offset int
}

func (f *functionsModel) update(msg functionsMsg) {
	if msg.err != nil {
		f.err = msg.err.Error()
		return
	}
	f.fns, f.err = msg.fns, ""
	f.cursor = min(f.cursor, max(len(f.fns)-1, 0))
}

func (f functionsModel) selected() (client.Function, bool) {
	if f.cursor < 0 || f.cursor >= len(f.fns) {
		return client.Function{}, false
	}
	return f.fns[f.cursor], true
}

// view draws the table in height lines, the selected function's full
// triggers and disabled reason in its last two.
func (f *functionsModel) view(st styles, width, height int, now time.Time) string {
	if f.err != "" && len(f.fns) == 0 {
		return st.errText.Render("functions: " + f.err)
	}
	const (
		nextW, lastW, ageW, nW = 9, 10, 6, 6
		gaps                   = 7
	)
	idW := 14
	for _, fn := range f.fns {
		idW = max(idW, len(fn.ID))
	}
	flex := width - 2 - nextW - lastW - ageW - 2*nW - gaps
	idW = min(idW, max(flex/2, 10))
	trigW := max(flex-idW, 8)
	row := func(cols ...string) string {
		ws := []int{idW, trigW, nextW, lastW, ageW, nW, nW}
		out := make([]string, len(cols))
		for i, c := range cols {
			out[i] = cell(c, ws[i])
		}
		return strings.Join(out, " ")
	}
	lines := []string{"  " + st.heading.Render(row("FUNCTION", "TRIGGERS", "NEXT CRON", "LAST", "AGE", "RUNS/H", "FAIL/H"))}
	rows := max(height-3, 1)
	f.offset = window(f.cursor, f.offset, len(f.fns), rows)
	for i := f.offset; i < min(f.offset+rows, len(f.fns)); i++ {
		fn := f.fns[i]
		next := "-"
		if fn.NextCron != nil {
			next = until(fn.NextCron, now)
		}
		last := st.statusText(fn.Stats.LastStatus)
		if fn.Stats.LastStatus == "" {
			last = "-"
		}
		if fn.Disabled != "" {
			last = st.errText.Render("disabled")
		}
		fails := fmt.Sprint(fn.Stats.FailuresLastHour)
		if fn.Stats.FailuresLastHour > 0 {
			fails = st.status["Failed"].Render(fails)
		}
		line := row(fn.ID, fn.TriggerText(), next, last, ago(fn.Stats.LastRunAt, now), fmt.Sprint(fn.Stats.RunsLastHour), fails)
		lines = append(lines, marker(st, i == f.cursor, line))
	}
	for len(lines) < height-2 {
		lines = append(lines, "")
	}
	if fn, ok := f.selected(); ok {
		info := st.bold.Render(fn.ID) + " " + st.dim.Render(fn.Name) + " · " + fn.TriggerText()
		note := st.dim.Render("enter: its runs · I: invoke it")
		if fn.Disabled != "" {
			note = st.errText.Render("disabled: " + fn.Disabled)
		}
		lines = append(lines, fit(info, width), fit(note, width))
	}
	return strings.Join(lines, "\n")
}

// marker prefixes a row with the cursor mark, which shows without colours
// too, and highlights the selected row.
func marker(st styles, selected bool, line string) string {
	if selected {
		return st.selected.Render("› " + ansi.Strip(line))
	}
	return "  " + line
}
