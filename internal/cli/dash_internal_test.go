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
	for fgbg, dark := range map[string]bool{"": true, "15;0": true, "0;15": false, "7;default;0": true, "0;7": false, "junk": true} {
		if got := darkBackground(func(k string) string { return map[string]string{"COLORFGBG": fgbg}[k] }); got != dark {
			t.Errorf("COLORFGBG=%q: dark %v, want %v", fgbg, got, dark)
		}
	}
}
