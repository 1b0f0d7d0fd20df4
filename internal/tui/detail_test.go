package tui

import (
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/colorprofile"

	"github.com/dcyfr/cyberdrew/internal/client"
)

// A contact run's detail shows the latest delivery status of each email
// Resend's webhooks reported; a run with none shows no Delivery section.
func TestDetailShowsDeliveries(t *testing.T) {
	t.Parallel()
	st := newStyles(colorprofile.ASCII, true)
	run := client.RunDetail{
		Run: client.Run{RunID: "01JN000000000000000000RUN7", FunctionID: "contact-form-submitted", Status: "Completed"},
		Deliveries: []client.Delivery{
			{Email: "notification", Status: "bounced", At: time.Date(2025, 3, 12, 10, 33, 0, 0, time.UTC), EventID: "msg_b"},
			{Email: "confirmation", Status: "delivered", At: time.Date(2025, 3, 12, 10, 32, 0, 0, time.UTC), EventID: "msg_d"},
		},
	}
	d := newDetailModel(run.RunID, 100, 40)
	d.update(detailMsg{runID: run.RunID, run: run}, st, t0)
	got := d.content(st, t0)
	for _, want := range []string{"Delivery", "notification  bounced           2025-03-12 10:33:00", "confirmation  delivered         2025-03-12 10:32:00"} {
		if !strings.Contains(got, want) {
			t.Errorf("detail lacks %q:\n%s", want, got)
		}
	}
	run.Deliveries = nil
	d.update(detailMsg{runID: run.RunID, run: run}, st, t0)
	if got := d.content(st, t0); strings.Contains(got, "Delivery") {
		t.Errorf("a run without deliveries shows a Delivery section:\n%s", got)
	}
}

// TestDetailWrapsErrors opens a failed run whose error and step error are
// longer than the screen: each is shown whole, wrapped under its label,
// where the viewport cut it at the screen's edge.
func TestDetailWrapsErrors(t *testing.T) {
	t.Parallel()
	st := newStyles(colorprofile.ASCII, true)
	const long = "step \"send-notification\" failed: resend: 422 validation_error: the from address contact@cyberdrew.dev is not verified for this domain; verify it at resend.com/domains"
	run := client.RunDetail{
		Run:   client.Run{RunID: "01JN000000000000000000RUN8", FunctionID: "contact-form-submitted", Status: "Failed", Error: long},
		Steps: []client.Step{{ID: "send-notification", Status: "Failed", Error: long}},
	}
	d := newDetailModel(run.RunID, 80, 40)
	d.update(detailMsg{runID: run.RunID, run: run}, st, t0)
	view := d.view()
	for _, label := range []string{"error    ", "      error: "} {
		var parts []string
		in := false
		for line := range strings.SplitSeq(view, "\n") {
			switch {
			case strings.HasPrefix(line, label):
				in, parts = true, []string{strings.TrimSpace(strings.TrimPrefix(line, label))}
			case in && strings.HasPrefix(line, strings.Repeat(" ", len(label))) && strings.TrimSpace(line) != "":
				parts = append(parts, strings.TrimSpace(line))
			default:
				in = false
			}
			if strings.Join(parts, " ") == long {
				break
			}
		}
		if got := strings.Join(parts, " "); got != long {
			t.Errorf("%q shows %q, want the whole error:\n%s", label, got, view)
		}
	}
}
