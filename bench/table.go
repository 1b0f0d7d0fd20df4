package main

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// cell is one measured figure, or the reason there is none.
type cell struct {
	text  string  // as printed
	value float64 // the figure the ratio uses; valid when ok
	ok    bool
}

// figure is a cell holding v printed with format.
func figure(format string, v float64) cell {
	return cell{text: fmt.Sprintf(format, v), value: v, ok: true}
}

// note is a cell without a figure.
func note(text string) cell { return cell{text: text} }

// failure is a cell for a measurement that failed.
func failure(err error) cell { return cell{text: "error: " + oneLine(err.Error())} }

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// row is one line of the table: one scenario's figure for each system.
type row struct {
	scenario string
	sqlite   cell
	redis    cell
	asynq    cell
}

// ratio is cyberdrew Redis over asynq, when both have a figure.
func (r row) ratio() string {
	if !r.redis.ok || !r.asynq.ok || r.asynq.value == 0 || math.IsNaN(r.redis.value/r.asynq.value) {
		return "—"
	}
	return fmt.Sprintf("%.3g×", r.redis.value/r.asynq.value)
}

// report is everything a run prints.
type report struct {
	title   string
	machine []string // "key: value" lines
	command string
	rows    []row
	notes   []string
}

// markdown writes the report as a markdown section.
func (rp *report) markdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s\n\n", rp.title)
	for _, m := range rp.machine {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	fmt.Fprintf(&b, "- command: `%s`\n\n", rp.command)
	b.WriteString("| scenario | cyberdrew SQLite | cyberdrew Redis | asynq | ratio (Redis/asynq) |\n")
	b.WriteString("|---|---:|---:|---:|---:|\n")
	for _, r := range rp.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.scenario, orDash(r.sqlite), orDash(r.redis), orDash(r.asynq), r.ratio())
	}
	if len(rp.notes) > 0 {
		b.WriteString("\n")
		for _, n := range rp.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orDash(c cell) string {
	if c.text == "" {
		return "—"
	}
	return c.text
}

// medianCell is the median of cells measured in rounds: the middle
// figure (the lower middle of an even count), or the first cell without
// a figure (a failure, a skip) when there is one.
func medianCell(cs []cell) cell {
	for _, c := range cs {
		if !c.ok {
			return c
		}
	}
	sorted := slices.SortedFunc(slices.Values(cs), func(a, b cell) int { return cmp.Compare(a.value, b.value) })
	return sorted[(len(sorted)-1)/2]
}
