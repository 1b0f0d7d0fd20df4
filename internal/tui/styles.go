package tui

import (
	"image/color"
	"strconv"

	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/colorprofile"
)

// styles are the dash's looks for one colour profile and background. Below
// the ANSI profile (NO_COLOR, a terminal without colours) every style is
// plain, so the dash writes no colour or text attribute (but the runs
// filter's cursor, in reverse video); above it the colours are full and
// Bubble Tea converts them to the profile as it draws.
type styles struct {
	title, dim, bold, selected, key, tabOn, tabOff, banner, flash, errText, box, heading lipgloss.Style
	status                                                                               map[string]lipgloss.Style
	// plain: no colour or attribute, only the box's border.
	plain bool
}

func newStyles(profile colorprofile.Profile, dark bool) styles {
	plain := profile != colorprofile.Unknown && profile < colorprofile.ANSI
	pick := lipgloss.LightDark(dark)
	ld := func(light, dark string) color.Color {
		return pick(paletteColor(profile, light), paletteColor(profile, dark))
	}
	type attr func(lipgloss.Style) lipgloss.Style
	bold := func(s lipgloss.Style) lipgloss.Style { return s.Bold(true) }
	under := func(s lipgloss.Style) lipgloss.Style { return s.Underline(true) }
	// fg is a text style of a colour (on a light, on a dark background;
	// none when light is empty) and attributes.
	fg := func(light, dark string, attrs ...attr) lipgloss.Style {
		s := lipgloss.NewStyle()
		if plain {
			return s
		}
		if light != "" {
			s = s.Foreground(ld(light, dark))
		}
		for _, a := range attrs {
			s = a(s)
		}
		return s
	}
	bg := func(s lipgloss.Style, light, dark string) lipgloss.Style {
		if plain {
			return s
		}
		return s.Background(ld(light, dark))
	}
	box := lipgloss.NewStyle().Border(lipgloss.RoundedBorder()).Padding(0, 1)
	if !plain {
		box = box.BorderForeground(ld("#5A3FC0", "#B9A5FF"))
	}
	s := styles{
		title:    fg("#5A3FC0", "#B9A5FF", bold),
		dim:      fg("#8A8A8A", "#6C6C6C"),
		bold:     fg("", "", bold),
		selected: bg(fg("", "", bold), "#E4DEFF", "#3A2F6B"),
		key:      fg("#5A3FC0", "#B9A5FF", bold),
		tabOn:    fg("#5A3FC0", "#B9A5FF", bold, under),
		tabOff:   fg("#8A8A8A", "#8A8A8A"),
		banner:   bg(fg("#FFFFFF", "#FFFFFF", bold), "#C0392B", "#A93226"),
		flash:    fg("#1E7B34", "#7BD88F"),
		errText:  fg("#C0392B", "#FF6B6B"),
		box:      box,
		heading:  fg("#333333", "#DDDDDD", bold),
		plain:    plain,
	}
	s.status = map[string]lipgloss.Style{
		"Queued":    fg("#6C6C6C", "#A0A0A0"),
		"Running":   fg("#1F6FEB", "#58A6FF"),
		"Sleeping":  fg("#9A6700", "#E3B341"),
		"Waiting":   fg("#9A6700", "#E3B341"),
		"Completed": fg("#1E7B34", "#7BD88F"),
		"Failed":    fg("#C0392B", "#FF6B6B", bold),
		"Cancelled": fg("#8250DF", "#D2A8FF"),
		"Skipped":   fg("#8A8A8A", "#6C6C6C"),
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

// paletteColor is the colour hex (#rrggbb) for profile. On a terminal of 16
// colours a grey is one of its own greys by lightness (black, bright black,
// bright white), as Bubble Tea v1 drew them: converted by distance, the
// dash's mid greys (#8A8A8A) came out as white (SGR 37), which is unreadable
// on a light background.
func paletteColor(profile colorprofile.Profile, hex string) color.Color {
	if profile == colorprofile.ANSI && len(hex) == 7 && hex[1:3] == hex[3:5] && hex[3:5] == hex[5:7] {
		if l, err := strconv.ParseUint(hex[1:3], 16, 8); err == nil {
			switch {
			case l < 0x40:
				return lipgloss.Black
			case l < 0xC0:
				return lipgloss.BrightBlack
			default:
				return lipgloss.BrightWhite
			}
		}
	}
	return lipgloss.Color(hex)
}
