package tui

import (
	"io"
	"strings"
	"testing"

	"github.com/charmbracelet/colorprofile"
)

// TestSixteenColourGreys draws the dash's greys on a terminal of 16 colours
// as Bubble Tea does (through a colour profile writer): bright black (SGR
// 90), readable on a light background and a dark one, where the conversion
// by distance gave white (SGR 37) for #8A8A8A, which vanished on white.
func TestSixteenColourGreys(t *testing.T) {
	for _, dark := range []bool{false, true} {
		st := newStyles(colorprofile.ANSI, dark)
		for name, s := range map[string]interface{ Render(...string) string }{"dim": st.dim, "tabOff": st.tabOff, "Skipped": st.status["Skipped"]} {
			var b strings.Builder
			w := &colorprofile.Writer{Forward: &b, Profile: colorprofile.ANSI}
			if _, err := io.WriteString(w, s.Render("x")); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(b.String(), "\x1b[90m") {
				t.Errorf("dark %v: %s draws %q, want bright black (SGR 90)", dark, name, b.String())
			}
		}
	}
}
