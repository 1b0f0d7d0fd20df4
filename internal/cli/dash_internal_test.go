package cli

import (
	"testing"

	"github.com/charmbracelet/colorprofile"
)

// TestDashColours: the dash's colour profile and background follow the
// environment only, as they did with termenv: NO_COLOR set to anything (or
// CLICOLOR=0 unforced) is colourless, TERM and COLORTERM say how many
// colours, COLORFGBG's background says light or dark, dark by default.
func TestDashColours(t *testing.T) {
	t.Parallel()
	profiles := []struct {
		env  map[string]string
		want colorprofile.Profile
	}{
		{map[string]string{}, colorprofile.ASCII},
		{map[string]string{"TERM": "xterm"}, colorprofile.ANSI},
		{map[string]string{"TERM": "xterm-256color"}, colorprofile.ANSI256},
		{map[string]string{"TERM": "xterm-256color", "COLORTERM": "truecolor"}, colorprofile.TrueColor},
		{map[string]string{"TERM": "xterm-256color", "NO_COLOR": "1"}, colorprofile.ASCII},
		{map[string]string{"TERM": "xterm-256color", "NO_COLOR": "yes"}, colorprofile.ASCII},
		{map[string]string{"TERM": "xterm-256color", "CLICOLOR": "0"}, colorprofile.ASCII},
		{map[string]string{"TERM": "xterm-256color", "CLICOLOR": "0", "CLICOLOR_FORCE": "1"}, colorprofile.ANSI256},
	}
	for _, c := range profiles {
		if got := dashProfile(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("%v: profile %v, want %v", c.env, got, c.want)
		}
	}
	// Unknown (asked of the terminal, dark until it answers) without a
	// COLORFGBG that names a colour.
	for fgbg, want := range map[string][2]bool{"": {true, false}, "15;0": {true, true}, "0;15": {false, true},
		"7;default;0": {true, true}, "0;7": {false, true}, "junk": {true, false}} {
		dark, known := darkBackground(func(k string) string { return map[string]string{"COLORFGBG": fgbg}[k] })
		if dark != want[0] || known != want[1] {
			t.Errorf("COLORFGBG=%q: dark %v known %v, want %v %v", fgbg, dark, known, want[0], want[1])
		}
	}
}
