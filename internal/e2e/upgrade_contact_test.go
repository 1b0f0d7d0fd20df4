package e2e

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/oklog/ulid/v2"

	"github.com/dcyfr/cyberdrew/internal/jobs"
	"github.com/dcyfr/cyberdrew/internal/store"
)

// TestContactCutShortByAnEarlierReleaseFinishes upgrades a store in which
// an earlier release was killed during a contact form's run, after it had
// sent the owner's notification: its send step recorded as releases
// before 2026-12-07 recorded it ({"delivered":true}), and in one case its
// announcement too, as releases before 2026-12-05 made it (a step
// emit-notification-delivered emitting contact/email.delivered). This
// release finishes the run: the notification is not sent again, it is
// announced once (contact/email.sent when the earlier release had not
// announced it), the visitor's confirmation goes out and is announced, and
// the run's output says both were sent. (Before, the recorded send read
// as not sent: the notification was never announced.)
func TestContactCutShortByAnEarlierReleaseFinishes(t *testing.T) {
	for _, announced := range []bool{false, true} {
		for _, backend := range backends {
			name := "sent/" + backend
			if announced {
				name = "sent and announced/" + backend
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				clock := clockwork.NewFakeClockAt(epoch)
				old, srv, dir := earlierStore(t, backend, clock)
				contactKilledMidRun(t, old, clock, announced)

				d := deployAt(t, backend, clock, srv, dir)
				clock.Advance(time.Minute) // the killed daemon's lease lapses
				done := d.awaitRuns(t, "contact-form-submitted", 1)
				var out map[string]jobs.SendResult
				if err := json.Unmarshal(done[0].Output, &out); err != nil {
					t.Fatalf("output %s: %v", done[0].Output, err)
				}
				if !out[jobs.EmailNotification].Sent || !out[jobs.EmailConfirmation].Sent {
					t.Errorf("output %s, want both emails sent", done[0].Output)
				}
				// Only the confirmation reaches Resend: the notification went
				// out under the earlier release.
				if got := d.resend.outbox(); len(got) != 1 || len(d.resend.to(visitorAddr)) != 1 {
					t.Errorf("Resend got %s, want the visitor's confirmation alone", describe(got))
				}
				kinds := map[string]int{}
				for _, ev := range d.events(t, jobs.EventEmailSent) {
					var o jobs.EmailOutcome
					if err := json.Unmarshal(ev.Data, &o); err != nil {
						t.Fatal(err)
					}
					kinds[o.Type]++
				}
				wantNotification := 1
				if announced {
					wantNotification = 0 // announced as contact/email.delivered then
				}
				if kinds[jobs.EmailNotification] != wantNotification || kinds[jobs.EmailConfirmation] != 1 {
					t.Errorf("contact/email.sent by type %v, want notification %d and confirmation 1", kinds, wantNotification)
				}
			})
		}
	}
}

// visitorAddr is the address of the contact form's visitor in
// contactKilledMidRun.
const visitorAddr = "early@example.com"

// contactKilledMidRun leaves in st what an earlier release left when it
// was killed during a contact form's run: the submission and its run,
// leased for 10 s, the owner's notification recorded as sent in that
// release's shape and, when announced, its contact/email.delivered
// emitted in a step of that release's name.
func contactKilledMidRun(t *testing.T, st store.Store, clock clockwork.Clock, announced bool) {
	t.Helper()
	data, _ := json.Marshal(map[string]string{"name": "Early Visitor", "email": visitorAddr, "message": "Sent before the upgrade."})
	steps := []recordedStep{{id: "send-notification-email", kind: store.StepRun, output: `{"delivered":true,"id":"re_early_notification"}`}}
	if announced {
		evID := ulid.Make().String()
		outcome, _ := json.Marshal(jobs.EmailOutcome{Email: visitorAddr, Type: jobs.EmailNotification, MessageID: "re_early_notification"})
		steps = append(steps, recordedStep{id: "emit-notification-delivered", kind: store.StepSendEvent, output: `["` + evID + `"]`,
			emit: []store.Publication{{Event: store.Event{ID: evID, Name: jobs.EventEmailDelivered, Data: outcome, TS: clock.Now().UnixMilli()}}}})
	}
	killedIn(t, st, clock, store.Event{Name: jobs.EventContactSubmitted, Data: data, TS: clock.Now().UnixMilli()}, "contact-form-submitted", steps, nil)
}
