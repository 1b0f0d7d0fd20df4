package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/dcyfr/cyberdrew/internal/client"
)

// headerModel is the two lines on top: the daemon, its store, workers,
// queue, start lag, and the runs/s and failures/s sparklines.
type headerModel struct {
	url   string
	stats client.Stats
	have  bool   // stats read at least once
	err   string // why the last stats read failed
}

func (h *headerModel) update(msg statsMsg) {
	if msg.err != nil {
		h.err = explain(msg.err)
		return
	}
	h.stats, h.have, h.err = msg.stats, true, ""
}

// rateSpan is the window of the runs/s and failures/s figures.
const rateSpan = 10

func (h headerModel) view(st styles, width int) string {
	s := h.stats
	var top []string
	top = append(top, st.title.Render(strings.TrimPrefix(strings.TrimPrefix(h.url, "http://"), "https://")))
	switch {
	case !h.have && h.err == "":
		top = append(top, st.dim.Render("connecting…"))
	case !h.have:
		top = append(top, st.errText.Render("stats: "+h.err))
	default:
		// After a failed read the figures are the last read's, and the
		// store's health is unknown: the failure takes its place.
		store := s.Store.Kind + " " + st.status["Completed"].Render("ok")
		switch {
		case h.err != "":
			store = st.errText.Render("stats: " + h.err)
		case !s.Store.Healthy:
			store = s.Store.Kind + " " + st.errText.Render("DOWN: "+s.Store.Error)
		}
		queue := "?"
		if s.QueueDepth != nil {
			queue = fmt.Sprint(*s.QueueDepth)
		}
		top = append(top,
			store,
			fmt.Sprintf("workers %d/%d", s.Workers.Busy, s.Workers.Size),
			"queue "+queue,
			fmt.Sprintf("lag p50 %s p99 %s", lagText(s.StartLag.P50Ms, s.StartLag.Samples), lagText(s.StartLag.P99Ms, s.StartLag.Samples)))
	}
	line1 := fit(strings.Join(top, st.dim.Render(" · ")), width)

	runsLabel := fmt.Sprintf("runs/s %5.1f ", rate(s.Finished))
	failLabel := fmt.Sprintf("  fail/s %5.1f ", rate(s.Failed))
	tail := st.dim.Render(" 5m")
	spark := max((width-len(runsLabel)-len(failLabel)-3)/2, 0)
	line2 := runsLabel + st.status["Completed"].Render(sparkline(s.Finished, spark)) +
		failLabel + st.status["Failed"].UnsetBold().Render(sparkline(s.Failed, spark)) + tail
	return line1 + "\n" + fit(line2, width)
}

func lagText(ms float64, samples int) string {
	if samples == 0 {
		return "-"
	}
	return span(time.Duration(ms * float64(time.Millisecond)))
}

// rate is the mean per second over the last rateSpan seconds of series.
func rate(series []int) float64 {
	n := min(rateSpan, len(series))
	if n == 0 {
		return 0
	}
	total := 0
	for _, v := range series[len(series)-n:] {
		total += v
	}
	return float64(total) / float64(n)
}

var sparks = []rune(" ▁▂▃▄▅▆▇█")

// sparkline draws series in width cells, each the sum of its share of the
// series, scaled to the largest cell; the newest cell is on the right.
func sparkline(series []int, width int) string {
	if width <= 0 {
		return ""
	}
	cells := make([]int, width)
	if n := len(series); n > 0 {
		for i, v := range series {
			cells[i*width/n] += v
		}
	}
	top := 0
	for _, v := range cells {
		top = max(top, v)
	}
	var b strings.Builder
	for _, v := range cells {
		switch {
		case v == 0:
			b.WriteRune('·')
		default:
			b.WriteRune(sparks[1+(v*(len(sparks)-2)+top-1)/top])
		}
	}
	return b.String()
}
