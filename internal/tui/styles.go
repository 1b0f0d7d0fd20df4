package tui

import "github.com/charmbracelet/lipgloss"

// styles are the dash's looks, drawn by one renderer so that tests pin the
// colour profile and NO_COLOR drops every escape.
type styles struct {
	title, dim, bold, selected, key, tabOn, tabOff, banner, flash, errText, box, heading lipgloss.Style
	status                                                                               map[string]lipgloss.Style
}

func newStyles(r *lipgloss.Renderer) styles {
	c := func(light, dark string) lipgloss.AdaptiveColor {
		return lipgloss.AdaptiveColor{Light: light, Dark: dark}
	}
	s := styles{
		title:    r.NewStyle().Bold(true).Foreground(c("#5A3FC0", "#B9A5FF")),
		dim:      r.NewStyle().Foreground(c("#8A8A8A", "#6C6C6C")),
		bold:     r.NewStyle().Bold(true),
		selected: r.NewStyle().Bold(true).Background(c("#E4DEFF", "#3A2F6B")),
		key:      r.NewStyle().Bold(true).Foreground(c("#5A3FC0", "#B9A5FF")),
		tabOn:    r.NewStyle().Bold(true).Underline(true).Foreground(c("#5A3FC0", "#B9A5FF")),
		tabOff:   r.NewStyle().Foreground(c("#8A8A8A", "#8A8A8A")),
		banner:   r.NewStyle().Bold(true).Foreground(c("#FFFFFF", "#FFFFFF")).Background(c("#C0392B", "#A93226")),
		flash:    r.NewStyle().Foreground(c("#1E7B34", "#7BD88F")),
		errText:  r.NewStyle().Foreground(c("#C0392B", "#FF6B6B")),
		box:      r.NewStyle().Border(lipgloss.RoundedBorder()).BorderForeground(c("#5A3FC0", "#B9A5FF")).Padding(0, 1),
		heading:  r.NewStyle().Bold(true).Foreground(c("#333333", "#DDDDDD")),
	}
	s.status = map[string]lipgloss.Style{
		"Queued":    r.NewStyle().Foreground(c("#6C6C6C", "#A0A0A0")),
		"Running":   r.NewStyle().Foreground(c("#1F6FEB", "#58A6FF")),
		"Sleeping":  r.NewStyle().Foreground(c("#9A6700", "#E3B341")),
		"Waiting":   r.NewStyle().Foreground(c("#9A6700", "#E3B341")),
		"Completed": r.NewStyle().Foreground(c("#1E7B34", "#7BD88F")),
		"Failed":    r.NewStyle().Bold(true).Foreground(c("#C0392B", "#FF6B6B")),
		"Cancelled": r.NewStyle().Foreground(c("#8250DF", "#D2A8FF")),
		"Skipped":   r.NewStyle().Foreground(c("#8A8A8A", "#6C6C6C")),
	}
	return s
}

// statusText colours a run or step status.
func (s styles) statusText(status string) string { return s.paint(status, status) }

// paint draws text in the colour of a status.
func (s styles) paint(status, text string) string {
	if st, ok := s.status[status]; ok {
		return st.Render(text)
	}
	return text
}
