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
